"""bone_avizo.models"""
