"""bone_avizo.avizo"""
