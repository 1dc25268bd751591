"""De-identification: profiles and their tables (profiles), the decision for each tag
(decisions), the element-stream engine (stream) over the dataset walk (engine), values,
markers, burned-in text, the output check (verify), keyed pseudonyms (pseudonym) and
their key (secret), one file in and one outcome out (pipeline)."""
