"""De-identification: profiles and their tables (profiles), the walk (engine), keyed
pseudonyms (pseudonym) and their key (secret), one file in and one outcome out (pipeline)."""
