"""The public ops against the reference: rank_match_, rank_match_many_, opcheck, bad input."""
