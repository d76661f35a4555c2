-- Other processes on the database learn of a change at once (LISTEN cascade): a video's record
-- (its watchers on another node), a job queued (idle workers wake; not the heartbeat's renewals
-- of running jobs' leases). Webhook
-- deliveries are sent by the process that queues them (a wake-up of every process would make
-- them race to send one delivery twice). The payload is "{application_name} {tree} {key in hex}": a
-- process names its connections after itself and skips its own changes. NOTIFY is sent when the
-- transaction commits, never for one rolled back.
CREATE FUNCTION cascade_notify() RETURNS trigger AS $$
BEGIN
    IF NEW.tree = 'videos' OR (NEW.tree = 'jobs' AND convert_from(NEW.v, 'UTF8')::jsonb ->> 'state' = 'queued') THEN
        PERFORM pg_notify('cascade', current_setting('application_name') || ' ' || NEW.tree || ' ' || encode(NEW.k, 'hex'));
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER cascade_notify AFTER INSERT OR UPDATE ON cascade_kv
    FOR EACH ROW EXECUTE FUNCTION cascade_notify();
