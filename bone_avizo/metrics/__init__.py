"""bone_avizo.metrics"""
