"""Development tools shipped with streamproc but never loaded by the worker: the partner simulator, the
one-command demo and the local Kafka broker (`streamproc simulate`, `streamproc demo`,
`scripts/kafka-local`).

What runs in production is in the rest of the package; a test holds that no runtime module imports
this one.
"""
