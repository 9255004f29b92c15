"""Journeys: multi-step follow-ups kept as data over careflow's database.

A journey is a file (careflow/journey_spec.py reads it); each customer's place
in it is a row (``journey_positions``) and each step they took another
(``journey_steps``). Nothing sleeps: ``careflow/journeys/advance.py`` enters
customers and moves due positions along, and careflow/flows/journey.py runs it
as the ``journey-advance`` flow, with the route sending what send steps send.
docs/journeys.md describes the format and the guarantees.
"""
