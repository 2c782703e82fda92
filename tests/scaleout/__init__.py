"""Scale-out tests: several service processes on one PostgreSQL database, counted for work done
exactly once, and a PostgreSQL server restarted under traffic."""
