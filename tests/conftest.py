"""The suite's pytest set-up: the fixtures and hooks of the real-network tests live in the plugin
:mod:`tools.pytest_plugin` (``node_factory``, ``netns_env``, the ``netns`` marker, daemon logs attached to
failure reports). ``tools`` is found through setup.cfg's ``pythonpath``, with no ``sys.path`` edits.
"""

pytest_plugins = ["tools.pytest_plugin"]
