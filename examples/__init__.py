"""Example services: the notes service (``notes_service``; ``python -m examples.notes_consumer``
runs it as a process) and the README's scripts (publisher_example.py, consumer_example.py)."""
