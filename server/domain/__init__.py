"""Domain rules, defined once and pure (no I/O, no clocks read unless passed in, no SDKs).

names     server names, branches, job ids
inputs    env names and values, commands, box paths, working dirs
durations TTLs, durations shown to people, ISO times, time left
states    box states, job states, signals, create steps (documented StrEnums)
redaction the one Redactor (``[redacted:NAME]``) and its secret-safe cut points
output    UTF-8 decoding, UTF-8 and secret-safe cuts, the head+tail window of a capped output
cost      what a box cost so far
"""
