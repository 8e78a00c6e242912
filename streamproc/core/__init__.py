"""Pure routing logic with no I/O: FQL, destination filters and gates, the mapping kit, payload
validation, JavaScript value rules."""
