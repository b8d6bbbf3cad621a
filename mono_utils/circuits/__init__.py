"""Circuits (notebook 07): exact attribution graphs through model A's transcoder, interventions that
test them, and their interactive view."""
