"""Pure stages of a load: profile, plan, read, cast, validate, encode. No SQL here."""
