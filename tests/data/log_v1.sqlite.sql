BEGIN TRANSACTION;
CREATE TABLE whodid_checkpoints (
	number INTEGER NOT NULL, 
	kind VARCHAR(8) NOT NULL, 
	created_at DATETIME NOT NULL, 
	hi BIGINT NOT NULL, 
	count INTEGER NOT NULL, 
	root VARCHAR(64) NOT NULL, 
	leaves BLOB NOT NULL, 
	info TEXT NOT NULL, 
	prev_hash VARCHAR(64) NOT NULL, 
	payload TEXT NOT NULL, 
	signature VARCHAR(128) NOT NULL, 
	key_id VARCHAR(64) NOT NULL, 
	PRIMARY KEY (number)
);
INSERT INTO "whodid_checkpoints" VALUES(1,'seal','2026-12-04 23:40:43.649847',6,6,'afbd64a2c9dfaa3962b36515cfa52fc64730905a75918329673b791c77694bbe',X'000000000000000100065F2BB5E24000909681A6DB624F1119D0E754D462D7ED787FC38F3451862932FE364F5F47EB23000000000000000200065F3FD3B9A00062F08C6E60B6DE129DB8885D4D9D124217149F1388F55BB1FC9170574461D5D9000000000000000300065F53F1910000930B63DE0DEECFB52C0A1F81B10BD56CF7034EF0901123A86E5EBC6217EC35F3000000000000000400065F680F686000F4F5760F05CC4E6BE2631B80743F302111B642A319CF44A5BCE46792B4E35ECF000000000000000500065F7C2D3FC00067FE95B239E1181E72777877A9DAFF5F9B4936EA49160373E9ED83E9D4F94A40000000000000000600065F904B17200018798BCADFC587800C459B4BAB0605C83A0C0DBA59B0ED4E496A04CBA80EA074','{"pending":{}}','0000000000000000000000000000000000000000000000000000000000000000','{"count":6,"created_at":"2026-12-04T23:40:43.649847Z","hi":6,"info":{"pending":{}},"key_id":"c841544aa1e436c8","kind":"seal","number":1,"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","root":"afbd64a2c9dfaa3962b36515cfa52fc64730905a75918329673b791c77694bbe"}','mNORTCp0gbFxOWE4KRuPWN/U6oecP3wb8xSXaaHrNiB1lOhmYn/uaTMTOHad0MILBqvhxqFlpCfRxGH5trSFAA==','c841544aa1e436c8');
CREATE TABLE whodid_entries (
	seq INTEGER NOT NULL, 
	id VARCHAR(32) NOT NULL, 
	tenant_id VARCHAR(128), 
	occurred_at DATETIME NOT NULL, 
	action VARCHAR(200) NOT NULL, 
	feature VARCHAR(100) NOT NULL, 
	operation VARCHAR(100) NOT NULL, 
	entity_type VARCHAR(200), 
	entity_id VARCHAR(400), 
	actor_type VARCHAR(16) NOT NULL, 
	actor_id VARCHAR(400), 
	actor_label VARCHAR(400), 
	passkey BOOLEAN NOT NULL, 
	ip VARCHAR(45), 
	country VARCHAR(2), 
	user_agent VARCHAR(1024), 
	client TEXT, 
	request_id VARCHAR(128), 
	metadata TEXT NOT NULL, 
	"before" TEXT, 
	"after" TEXT, 
	digest VARCHAR(64) NOT NULL, 
	PRIMARY KEY (seq), 
	UNIQUE (id)
);
INSERT INTO "whodid_entries" VALUES(1,'log_01M91PWYQMPXKKGPXED09N1N4V','org_b','2026-11-01 00:00:00.000000','payment.refund','payment','refund','payment','pay_0','user','usr_0','user0@example.com',0,'203.0.113.7',NULL,NULL,NULL,'req_0','{"amount":"0"}',NULL,'{"status":"refunded"}','909681a6db624f1119d0e754d462d7ed787fc38f3451862932fe364f5f47eb23');
INSERT INTO "whodid_entries" VALUES(2,'log_01M91PWYQPAN3831WYXJRTN62Y','org_a','2026-11-02 00:00:00.000000','payment.refund','payment','refund','payment','pay_1','user','usr_1','user1@example.com',0,'203.0.113.7',NULL,NULL,NULL,'req_1','{"amount":"10"}',NULL,'{"status":"refunded"}','62f08c6e60b6de129db8885d4d9d124217149f1388f55bb1fc9170574461d5d9');
INSERT INTO "whodid_entries" VALUES(3,'log_01M91PWYQR08GP6XQPD17MJM7J','org_b','2026-11-03 00:00:00.000000','payment.refund','payment','refund','payment','pay_2','user','usr_0','user0@example.com',0,'203.0.113.7',NULL,NULL,NULL,'req_2','{"amount":"20"}',NULL,'{"status":"refunded"}','930b63de0deecfb52c0a1f81b10bd56cf7034ef0901123a86e5ebc6217ec35f3');
INSERT INTO "whodid_entries" VALUES(4,'log_01M91PWYQS70T2ZJSHXMRCV3GY','org_a','2026-11-04 00:00:00.000000','payment.refund','payment','refund','payment','pay_3','user','usr_1','user1@example.com',0,'203.0.113.7',NULL,NULL,NULL,'req_3','{"amount":"30"}',NULL,'{"status":"refunded"}','f4f5760f05cc4e6be2631b80743f302111b642a319cf44a5bce46792b4e35ecf');
INSERT INTO "whodid_entries" VALUES(5,'log_01M91PWYQVP6DZ7YHMPX0PG1RM','org_b','2026-11-05 00:00:00.000000','payment.refund','payment','refund','payment','pay_4','user','usr_0','user0@example.com',0,'203.0.113.7',NULL,NULL,NULL,'req_4','{"amount":"40"}',NULL,'{"status":"refunded"}','67fe95b239e1181e72777877a9daff5f9b4936ea49160373e9ed83e9d4f94a40');
INSERT INTO "whodid_entries" VALUES(6,'log_01M91PWYQW18TPM9QEMSC9A74E','org_a','2026-11-06 00:00:00.000000','payment.refund','payment','refund','payment','pay_5','user','usr_1','user1@example.com',0,'203.0.113.7',NULL,NULL,NULL,'req_5','{"amount":"50"}',NULL,'{"status":"refunded"}','18798bcadfc587800c459b4bab0605c83a0c0dba59b0ed4e496a04cba80ea074');
CREATE TABLE whodid_purge_window (
	id INTEGER NOT NULL, 
	"before" DATETIME NOT NULL, 
	tenant_id VARCHAR(128), 
	PRIMARY KEY (id)
);
CREATE INDEX ix_whodid_tenant_time ON whodid_entries (tenant_id, occurred_at, seq);
CREATE INDEX ix_whodid_action ON whodid_entries (tenant_id, action, occurred_at, seq);
CREATE INDEX ix_whodid_request ON whodid_entries (tenant_id, request_id);
CREATE INDEX ix_whodid_entity ON whodid_entries (tenant_id, entity_id, occurred_at, seq);
CREATE INDEX ix_whodid_actor ON whodid_entries (tenant_id, actor_id, occurred_at, seq);
CREATE TRIGGER whodid_entries_no_update BEFORE UPDATE ON whodid_entries
        BEGIN SELECT RAISE(ABORT, 'UPDATE rejected: whodid_entries is append-only: audit entries and checkpoints are write-once and cannot be updated or deleted (retention goes through Auditor.purge / whodid purge)'); END;
CREATE TRIGGER whodid_entries_no_delete BEFORE DELETE ON whodid_entries
        WHEN NOT EXISTS (SELECT 1 FROM whodid_purge_window w WHERE OLD.occurred_at < w.before
    AND (w.tenant_id IS NULL OR w.tenant_id = OLD.tenant_id))
        BEGIN SELECT RAISE(ABORT, 'DELETE rejected: whodid_entries is append-only: audit entries and checkpoints are write-once and cannot be updated or deleted (retention goes through Auditor.purge / whodid purge)'); END;
CREATE TRIGGER whodid_checkpoints_no_update BEFORE UPDATE ON whodid_checkpoints
        BEGIN SELECT RAISE(ABORT, 'UPDATE rejected: whodid_checkpoints is append-only: audit entries and checkpoints are write-once and cannot be updated or deleted (retention goes through Auditor.purge / whodid purge)'); END;
CREATE TRIGGER whodid_checkpoints_no_delete BEFORE DELETE ON whodid_checkpoints
        BEGIN SELECT RAISE(ABORT, 'DELETE rejected: whodid_checkpoints is append-only: audit entries and checkpoints are write-once and cannot be updated or deleted (retention goes through Auditor.purge / whodid purge)'); END;
COMMIT;
