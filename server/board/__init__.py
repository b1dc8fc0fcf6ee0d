"""The board: a live web page of the fleet, the jobs' output, the review queue and the plans (docs/board.md).

``text`` makes box-originated strings safe to show; ``view`` (pure) turns store records into the fleet
document the page renders; ``hub`` keeps that document current and tells subscribers; ``review`` builds the
review queue; ``auth`` holds sessions, the login token and CSRF tokens; ``actions`` are the POSTs (each a
Fleet call); ``app`` is the Starlette app; ``serve`` runs ``boxforge board``. Static files are package data.
"""
