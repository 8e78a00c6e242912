"""Pure routing logic with no I/O: FQL, the mapping kit, payload validation, JavaScript value rules."""
