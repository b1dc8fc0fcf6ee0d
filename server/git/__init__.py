"""Git through the orchestrator: the orchestrator reads the user's repo (with its own credentials),
seeds boxes with a bundle pushed over the box channel, brings their work home as refs under
``refs/boxforge/<box>/<branch>``, compares, lands and pushes it. A box never receives a git token.

Modules: ``local`` (host-side git runs and credentials), ``seed`` (bundle in), ``harvest`` (bundle
out, uncommitted work as one extra commit), ``compare`` (fan-in overview), ``land`` (ordered merges),
``push`` (to the user's remote).
"""
