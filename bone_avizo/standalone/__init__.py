"""The standalone face: ``python -m bone_avizo.standalone <command>`` (also ``bone-avizo``)."""
