"""bone_avizo.data"""
