"""Pure reading of replies: understand → parse, classify (headers), validate, decide; workers."""
