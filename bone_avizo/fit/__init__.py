"""bone_avizo.fit"""
