"""The runs: what each command that moves messages runs, built by one composition root.

    compose.py  the composition root: dispatcher, senders, dead-letter producer, processor
    worker.py   `streamproc run`: the consumer-group member, its live consumer and retry lane
    retry.py    the worker's retry lane: reads parked deliveries back when they are due
    replay.py   `streamproc replay`: a range of a topic through the routing again
    redrive.py  `streamproc dlq redrive`: the deliveries dead letters name, made again

Each run reads messages through a Kafka adapter (streamproc.kafka) and hands them to an
`EventProcessor` (streamproc.pipeline); what is a run's own is where its messages come from and
how its progress is kept. The commands (streamproc.commands) only parse arguments and call a run.
"""
