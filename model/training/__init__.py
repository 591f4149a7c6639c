"""Training and evaluation: the room that reads the generator (``metadata_gen``). Serving never imports it."""
