CREATE OR REPLACE FUNCTION whodid_reject() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'whodid_entries' AND EXISTS (SELECT 1 FROM whodid_purge_window w WHERE OLD.occurred_at < w.before
    AND (w.tenant_id IS NULL OR w.tenant_id = OLD.tenant_id)) THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION '% rejected: % is append-only: audit entries and checkpoints are write-once and cannot be updated or deleted (retention goes through Auditor.purge / whodid purge)', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END $$
