"""Kafka edges: the consumer loop, offset tracking, the dead-letter producer, replay and redrive."""
