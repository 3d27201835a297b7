"""drl_core: the persistence layer shared by api/ and worker/ (settings, database, job states,
artifact store). One home that both import, so neither keeps a copy."""
