"""What runs on a box: the ``sh/`` scripts (package data), their loader (``scripts``) and the
protocol they share with the Python side (``protocol``: exit codes, the ``~/.boxforge`` layout)."""
