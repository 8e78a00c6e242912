"""streamproc: route Segment events from Kafka through FQL triggers and mappings to partner APIs."""

__version__ = "0.1.0"
