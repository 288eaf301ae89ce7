-- A save diffed against the state its writer last saw is sent with its COMMIT in one round trip,
-- led by a guard (an UPDATE of the agent's row that matches only while its version tokens are the
-- ones seen). The guard counts the rows it matched through this function, so that a changed agent
-- aborts the whole transaction on the server; the writer then diffs again against the database.
CREATE FUNCTION kodestore_expect_row(matched bigint) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    IF matched = 0 THEN
        RAISE EXCEPTION 'kodestore: the agent changed since this save was diffed; it is diffed again'
            USING ERRCODE = 'KS409';
    END IF;
    RETURN matched;
END
$$;
