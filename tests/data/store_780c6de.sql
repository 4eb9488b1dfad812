-- {"cookie": "w-tVRh5LftWYmmjJY-ZtSJyWlx3O1NuXF3EnHvkT1dM", "token": "gw_tTmElWCwMjKzYrAAxvDLvTVxSmpSOxoxJqYdSzEmCCQ", "password": "correct horse battery"}
PRAGMA user_version = 0;
BEGIN TRANSACTION;
CREATE TABLE alarm_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alarm_id INTEGER NOT NULL REFERENCES alarms(id),
    ts TEXT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
INSERT INTO "alarm_events" VALUES(1,1,'2026-12-06T09:28:41.334989+00:00','raised','rule:sos','{"value": true, "occurred_at": "2026-12-06T09:23:41.331049+00:00"}');
INSERT INTO "alarm_events" VALUES(2,1,'2026-12-06T09:28:41.336286+00:00','retriggered','rule:sos','{"value": true}');
INSERT INTO "alarm_events" VALUES(3,2,'2026-12-06T09:28:41.339133+00:00','raised','rule:smoke','{"value": true, "occurred_at": "2026-12-06T09:23:41.331049+00:00"}');
INSERT INTO "alarm_events" VALUES(4,2,'2026-12-06T09:28:41.351152+00:00','escalated','system','{"tier": 1, "tier_name": "grid_member", "targets": ["grid_member"]}');
INSERT INTO "alarm_events" VALUES(5,1,'2026-12-06T09:28:41.364642+00:00','acknowledged','wangfang','{"note": "已电话联系"}');
INSERT INTO "alarm_events" VALUES(6,1,'2026-12-06T09:28:41.371385+00:00','resolved','wangfang','{"reason": "handled", "note": "已上门"}');
INSERT INTO "alarm_events" VALUES(7,2,'2026-12-06T09:28:41.391003+00:00','cleared','device','{"reason": "smoke gone"}');
INSERT INTO "alarm_events" VALUES(8,1,'2026-12-06T09:28:41.398313+00:00','case_created','case_system','{"case_id": "C-1", "status": "accepted"}');
INSERT INTO "alarm_events" VALUES(9,1,'2026-12-06T09:28:41.411071+00:00','case_status','case_system:李','{"status": "dispatched", "note": "派单", "event_id": "ev-1", "via": "callback"}');
CREATE TABLE alarms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    category TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('raised', 'acknowledged', 'resolved')),
    device_id TEXT,
    household_id TEXT,
    grid_cell TEXT,
    message_zh TEXT NOT NULL,
    message_en TEXT NOT NULL,
    value TEXT,
    count INTEGER NOT NULL DEFAULT 1,
    test INTEGER NOT NULL DEFAULT 0,
    occurred_at TEXT NOT NULL,
    raised_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    cleared_at TEXT,
    escalation_tier INTEGER NOT NULL DEFAULT 0,
    escalation_tier_name TEXT,
    ack_by TEXT, ack_at TEXT, ack_note TEXT,
    resolved_by TEXT, resolved_at TEXT, resolve_reason TEXT, resolve_note TEXT,
    case_id TEXT, case_status TEXT, case_error TEXT
);
INSERT INTO "alarms" VALUES(1,'sos:caller-7-101','sos','emergency_call','critical','resolved','caller-7-101','h-7-101','310104-012-03','一键呼叫','SOS','true',2,0,'2026-12-06T09:23:41.331049+00:00','2026-12-06T09:28:41.334989+00:00','2026-12-06T09:28:41.371385+00:00',NULL,0,NULL,'wangfang','2026-12-06T09:28:41.364642+00:00','已电话联系','wangfang','2026-12-06T09:28:41.371385+00:00','handled','已上门','C-1','dispatched','invalid_payload: grid_cell_code');
INSERT INTO "alarms" VALUES(2,'smoke:smoke-7-101','smoke','fire','critical','raised','smoke-7-101','h-7-101','310104-012-03','烟感报警','Smoke','true',1,0,'2026-12-06T09:23:41.331049+00:00','2026-12-06T09:28:41.339133+00:00','2026-12-06T09:28:41.391003+00:00','2026-12-06T09:28:41.391003+00:00',1,'grid_member',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL);
CREATE TABLE api_tokens (
    token_hash TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,
    created_at TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
INSERT INTO "api_tokens" VALUES('a73c9c57c0f5c81277f41ac98f509bd29c7cc202155dd2b7bdf11e19c0721d32','tablet','installer','2026-12-06T09:28:42.491502+00:00',0);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'
);
INSERT INTO "audit" VALUES(1,'2026-12-06T09:28:41.364827+00:00','wangfang','alarm.acknowledge','1','{}');
INSERT INTO "audit" VALUES(2,'2026-12-06T09:28:41.371633+00:00','wangfang','alarm.resolve','1','{"reason": "handled"}');
INSERT INTO "audit" VALUES(3,'2026-12-06T09:28:41.763957+00:00','cli','user.create','admin','{"role": "admin"}');
INSERT INTO "audit" VALUES(4,'2026-12-06T09:28:42.119005+00:00','cli','user.create','duty','{"role": "duty"}');
INSERT INTO "audit" VALUES(5,'2026-12-06T09:28:42.477761+00:00','duty','login','duty','{}');
INSERT INTO "audit" VALUES(6,'2026-12-06T09:28:42.491595+00:00','cli','token.create','tablet','{"role": "installer"}');
INSERT INTO "audit" VALUES(7,'2026-12-06T09:28:42.502257+00:00','cli','site.edit','devices.yaml','{"note": "x"}');
CREATE TABLE case_callbacks (
    event_id TEXT PRIMARY KEY, received_at TEXT NOT NULL);
INSERT INTO "case_callbacks" VALUES('ev-1','2026-12-06T09:28:41.410939+00:00');
CREATE TABLE device_faults (key TEXT PRIMARY KEY, fault TEXT NOT NULL, device_id TEXT, household_id TEXT, grid_cell TEXT, severity TEXT NOT NULL, message_zh TEXT NOT NULL, message_en TEXT NOT NULL, raised_at TEXT NOT NULL, cleared_at TEXT);
INSERT INTO "device_faults" VALUES('fault:caller-7-102:battery_low','battery_low','caller-7-102','h-7-102','310104-012-03','minor','电量低','battery low','2026-12-06T09:23:41.331049+00:00',NULL);
CREATE TABLE device_tests (id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, rule_id TEXT NOT NULL, ts TEXT NOT NULL, value TEXT);
INSERT INTO "device_tests" VALUES(1,'caller-7-103','sos','2026-12-06T09:23:41.331049+00:00','true');
CREATE TABLE inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    source TEXT NOT NULL,
    reading TEXT NOT NULL,
    processed_at TEXT
);
INSERT INTO "inbox" VALUES(1,'2026-12-06T09:28:41.418790+00:00','caller-7-101','{"device_id": "caller-7-101", "kind": "sos", "value": true, "ts": "2026-12-06T09:23:41.331049+00:00", "unit": "", "quality": "good", "device_type": "", "household_id": null, "grid_cell": null, "metric": "sos"}',NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "meta" VALUES('instance_id','e908e79002e7');
INSERT INTO "meta" VALUES('schema_version','1');
INSERT INTO "meta" VALUES('notify_cursor','3');
INSERT INTO "meta" VALUES('upstream_cursor','2');
INSERT INTO "meta" VALUES('case_poll_since','2026-12-06T09:23:41.331049+00:00');
INSERT INTO "meta" VALUES('rules_snapshot','{}');
INSERT INTO "meta" VALUES('setup_token_hash','8b3c4bf2292d174972d66d1e1ce932165d947b21237a5c444515145f5ed2f7a7');
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    alarm_id INTEGER NOT NULL,
    topic TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    delivered_at TEXT,
    last_error TEXT
);
INSERT INTO "outbox" VALUES(1,1,'case.create','tianlin-07-e908e79002e7-1-0','{"site_id": "tianlin-07", "grid_cell_code": "310104-012-03", "household": {"id": "h-7-101", "address": "田林路200弄7号101室"}, "category": "emergency_call", "severity": "critical", "title": "一键呼叫", "description": "SOS", "occurred_at": "2026-12-06T09:23:41.331049+00:00", "device": {"id": "caller-7-101", "type": "emergency_caller"}, "gateway_alarm_id": 1, "callback_url": null, "idempotency_key": "tianlin-07-e908e79002e7-1-0", "sequence": 0}','2026-12-06T09:28:41.334989+00:00',1,0.0,'delivered','2026-12-06T09:28:41.398313+00:00',NULL);
INSERT INTO "outbox" VALUES(2,2,'case.create','tianlin-07-e908e79002e7-2-0','{"site_id": "tianlin-07", "grid_cell_code": "310104-012-03", "household": {"id": "h-7-101", "address": "田林路200弄7号101室"}, "category": "fire", "severity": "critical", "title": "烟感报警", "description": "Smoke", "occurred_at": "2026-12-06T09:23:41.331049+00:00", "device": {"id": "smoke-7-101", "type": "smoke_detector"}, "gateway_alarm_id": 2, "callback_url": null, "idempotency_key": "tianlin-07-e908e79002e7-2-0", "sequence": 0}','2026-12-06T09:28:41.339133+00:00',1,0.0,'pending',NULL,'timeout');
INSERT INTO "outbox" VALUES(3,1,'case.update','tianlin-07-e908e79002e7-1-1','{"event": "acknowledged", "by": "wangfang", "note": "已电话联系", "at": "2026-12-06T09:28:41.364642+00:00", "idempotency_key": "tianlin-07-e908e79002e7-1-1", "sequence": 1}','2026-12-06T09:28:41.364642+00:00',1,0.0,'failed',NULL,'invalid_payload: grid_cell_code');
INSERT INTO "outbox" VALUES(4,1,'case.update','tianlin-07-e908e79002e7-1-2','{"event": "resolved", "by": "wangfang", "reason": "handled", "note": "已上门", "at": "2026-12-06T09:28:41.371385+00:00", "idempotency_key": "tianlin-07-e908e79002e7-1-2", "sequence": 2}','2026-12-06T09:28:41.371385+00:00',0,0.0,'pending',NULL,NULL);
INSERT INTO "outbox" VALUES(5,2,'case.update','tianlin-07-e908e79002e7-2-1','{"event": "cleared", "reason": "smoke gone", "at": "2026-12-06T09:28:41.391003+00:00", "idempotency_key": "tianlin-07-e908e79002e7-2-1", "sequence": 1}','2026-12-06T09:28:41.391003+00:00',0,0.0,'pending',NULL,NULL);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, csrf TEXT NOT NULL,
    created REAL NOT NULL, last_seen REAL NOT NULL);
INSERT INTO "sessions" VALUES('3f22344f0f5501e6ed7f88f813f622934bc525055485085c79d9b2c49f7fc601','duty','HBICpqIazofQUPid_kAoFOwLNlh8Ga1G',1.79654932247743940351e+09,1.79654932247743940351e+09);
CREATE TABLE users (
    username TEXT PRIMARY KEY, role TEXT NOT NULL, display_name TEXT NOT NULL DEFAULT '',
    password_hash TEXT NOT NULL, created_at TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0);
INSERT INTO "users" VALUES('admin','admin','管理员','$argon2id$v=19$m=65536,t=3,p=4$09ld8hTGCj4d7znpnvfPzw$+76pN3gclZBlEcq/dPY4eexeLN/Mfy3dUfhc9UTIDNQ','2026-12-06T09:28:41.763855+00:00',0);
INSERT INTO "users" VALUES('duty','duty','值班员','$argon2id$v=19$m=65536,t=3,p=4$FYP7JivPlg/Smwj1BHWNTA$AaG8oAJIDQFuyESF/TnD5Y2dwOFReStNT0DFAaQUHi0','2026-12-06T09:28:42.118936+00:00',0);
CREATE INDEX inbox_pending ON inbox(seq) WHERE processed_at IS NULL;
CREATE UNIQUE INDEX alarms_open_key ON alarms(key) WHERE state != 'resolved';
CREATE INDEX alarms_state ON alarms(state, severity, raised_at);
CREATE INDEX alarm_events_alarm ON alarm_events(alarm_id, id);
CREATE INDEX outbox_pending ON outbox(seq) WHERE state = 'pending';
CREATE INDEX outbox_alarm ON outbox(alarm_id, seq);
CREATE INDEX device_tests_device ON device_tests(device_id, id);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('alarms',2);
INSERT INTO "sqlite_sequence" VALUES('alarm_events',9);
INSERT INTO "sqlite_sequence" VALUES('outbox',5);
INSERT INTO "sqlite_sequence" VALUES('device_tests',1);
INSERT INTO "sqlite_sequence" VALUES('audit',7);
INSERT INTO "sqlite_sequence" VALUES('inbox',1);
COMMIT;
