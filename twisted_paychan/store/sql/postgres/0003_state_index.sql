-- A server that runs for months holds every channel it ever had: listings by state (a restart's
-- live channels, a prune's failed contracts, a client's open ones) and pages of the newest
-- channels read an index, not the whole table and a sort of it.
CREATE INDEX server_channels_seq ON server_channels (seq);
CREATE INDEX server_channels_state ON server_channels (state, seq);
CREATE INDEX client_channels_seq ON client_channels (seq);
CREATE INDEX client_channels_state ON client_channels (state, seq);
