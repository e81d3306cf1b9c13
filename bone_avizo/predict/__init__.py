"""bone_avizo.predict"""
