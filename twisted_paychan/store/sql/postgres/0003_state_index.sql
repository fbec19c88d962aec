-- Listings by state (a restart's open channels, a prune's failed contracts) read an index, not
-- every channel the server ever had.
CREATE INDEX server_channels_state ON server_channels (state);
