"""``python -m bone_avizo.avizo install --avizo-root PATH [--dry-run]`` (see :mod:`bone_avizo.avizo.cli`)."""
import sys

from bone_avizo.avizo.cli import main

if __name__ == "__main__":
    sys.exit(main())
