# ruff: noqa: E501  # one statement per line reads better than wrapped SQL
"""The statement corpus: person | dialect (m, p, b = both) | decision | rule id (- for none) | SQL.

Grouped by rule; each group holds the variants of one class of statement or bypass
(see the bypass classes in docs/policy.md). Statements are written once and run
against the example bank policy (examples/policy.toml) with catalogs in memory.
"""

CORPUS = r"""
## allowed everyday work
dev|b|allow|-|SELECT id, city FROM customers WHERE id = 7
dev|b|allow|-|SELECT id, name, mobile FROM customers WHERE id = 5
dev|b|allow|-|SELECT c.name, a.card_no, t.amount FROM customers c JOIN accounts a ON a.customer_id = c.id JOIN transactions t ON t.account_id = a.id WHERE t.amount > 100
dev|b|allow|-|SELECT count(*) FROM transactions WHERE amount > 1000
dev|b|allow|-|SELECT account_type, sum(balance) FROM accounts GROUP BY account_type ORDER BY 2 DESC
dev|b|allow|-|INSERT INTO accounts (id, customer_id, account_type, balance, status) VALUES (1, 2, 'saving', 0, 'open')
dev|b|allow|-|UPDATE accounts SET status = 'frozen' WHERE id = 42
dev|b|allow|-|DELETE FROM accounts WHERE id = 42
dev|b|allow|-|SELECT * FROM customers WHERE id = 1
dev|b|allow|-|SELECT name FROM customers WHERE mobile = '13800001111'
dev|b|allow|-|SELECT id FROM customers WHERE mobile IN ('13800001111', '13900002222')
dev|b|allow|-|SELECT city, count(*) FROM customers GROUP BY city HAVING count(*) > 10
dev|b|allow|-|SELECT id FROM accounts WHERE balance BETWEEN 10 AND 20 ORDER BY balance LIMIT 10
dev|b|allow|-|SELECT count(mobile) FROM customers
dev|b|allow|-|SELECT count(DISTINCT city) FROM customers
dev|b|allow|-|SELECT x.town FROM (SELECT city AS town FROM customers) x
dev|b|allow|-|WITH big AS (SELECT account_id, amount FROM transactions WHERE amount > 1000) SELECT account_id FROM big
dev|b|allow|-|SELECT id FROM customers UNION ALL SELECT id FROM accounts
dev|b|allow|-|SELECT phone, town FROM v_contacts WHERE id = 3
dev|b|allow|-|SELECT 1
dev|b|allow|-|SELECT now()
dev|m|allow|-|SELECT @@version
dev|m|allow|-|SHOW TABLES
dev|m|allow|-|SHOW COLUMNS FROM customers
dev|m|allow|-|DESCRIBE customers
dev|m|allow|-|USE bank
dev|m|allow|-|SET NAMES utf8mb4
dev|m|allow|-|SET NAMES 'utf8mb4' COLLATE 'utf8mb4_general_ci'
dev|m|allow|-|SET character_set_results = NULL
dev|m|allow|-|SELECT 1 FROM DUAL
dev|m|allow|-|SELECT @@version_comment LIMIT 1
dev|m|allow|-|SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED
dev|m|allow|-|SHOW FULL TABLES FROM `bank` LIKE 'customers'
dev|m|allow|-|SHOW CREATE TABLE customers
dev|m|block|SB-GRANT-DENIED|SHOW COLUMNS FROM notes FROM other
dev|m|block|SB-GRANT-DENIED|SHOW FULL COLUMNS FROM other.notes
dev|m|block|SB-GRANT-DENIED|SHOW CREATE TABLE `other`.`notes`
dev|m|allow|-|SHOW INDEX FROM accounts
analyst|m|allow|-|SHOW COLUMNS FROM customers
analyst|m|block|SB-GRANT-DENIED|SHOW COLUMNS FROM branches
dev|p|allow|-|SELECT typname, typnamespace, typtype FROM pg_type WHERE oid = ANY($1::oid[])
dev|p|allow|-|SELECT $1::oid[], ARRAY[1, 2]::int8[]
dev|p|allow|-|SET extra_float_digits = 3
dev|p|allow|-|SELECT pg_catalog.current_setting('server_version_num')
dev|p|allow|-|SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relname OPERATOR(pg_catalog.~) '^(customers)$' COLLATE pg_catalog.default AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 2, 3
dev|m|allow|-|SET autocommit = 0
dev|m|allow|-|SET sql_mode = 'STRICT_TRANS_TABLES'
dev|m|allow|-|SET sql_mode = 'ANSI_QUOTES'
dev|m|allow|-|SET @limit = 10
dev|m|allow|-|BEGIN
dev|m|allow|-|START TRANSACTION
dev|b|allow|-|COMMIT
dev|b|allow|-|ROLLBACK
dev|p|allow|-|SAVEPOINT a
dev|p|allow|-|RELEASE SAVEPOINT a
dev|p|allow|-|ROLLBACK TO SAVEPOINT a
dev|p|allow|-|SET search_path TO public
dev|p|allow|-|SET TIME ZONE 'UTC'
dev|p|allow|-|SET application_name = 'psql'
dev|p|allow|-|SET standard_conforming_strings = on
dev|p|allow|-|SET client_encoding = 'UTF8'
dev|p|allow|-|SHOW search_path
dev|p|allow|-|SELECT typname FROM pg_type WHERE oid = 23
dev|p|allow|-|SELECT t.oid, t.typname FROM pg_catalog.pg_type t JOIN pg_catalog.pg_class c ON c.oid = t.oid
dev|p|allow|-|SELECT column_name FROM information_schema.columns WHERE table_name = 'customers'
dev|p|allow|-|TABLE branches
dev|p|allow|-|SELECT id FROM customers FOR UPDATE
dev|p|allow|-|INSERT INTO accounts (id, status) VALUES (1, 'open') ON CONFLICT (id) DO UPDATE SET status = excluded.status
dev|p|allow|-|UPDATE accounts SET status = 'x' WHERE id = 1 RETURNING id, status
dev|p|allow|-|DELETE FROM accounts WHERE id = 1 RETURNING id
dev|p|allow|-|SELECT (c).city FROM customers c
dev|p|allow|-|DECLARE cur CURSOR FOR SELECT id, city FROM customers
dev|p|allow|-|FETCH 10 FROM cur
dev|p|allow|-|CLOSE cur
dev|p|allow|-|SELECT id FROM customers WHERE created_at > now() - interval '1 day'
dev|m|allow|-|REPLACE INTO accounts (id, status) VALUES (1, 'a')
dev|m|allow|-|INSERT INTO accounts (id, status) VALUES (1, 'a') ON DUPLICATE KEY UPDATE status = 'b'
dev|m|allow|-|UPDATE accounts SET status = 'x' WHERE id = 1 LIMIT 1
dev|m|allow|-|SELECT id FROM customers WHERE id = 1 /* a comment */ -- and another
dev|m|allow|-|SELECT id FROM customers # trailing hash comment
dev|b|allow|-|SELECT 'it''s', id FROM customers WHERE id = 1
dev|b|allow|-|EXPLAIN SELECT id FROM customers WHERE id = 1
dev|m|allow|-|SELECT id FROM bank.customers WHERE bank.customers.id = 1
dev|p|allow|-|SELECT id FROM public.customers WHERE public.customers.id = 1
dev|b|allow|-|SELECT a.id FROM accounts a WHERE EXISTS (SELECT 1 FROM transactions t WHERE t.account_id = a.id AND t.amount > 5)
dba|b|allow|-|SELECT * FROM customers
dba|b|allow|-|SELECT mobile FROM customers WHERE mobile LIKE '138%'
dba|b|allow|-|SELECT hex(id_card) FROM customers
analyst|b|allow|-|SELECT id, name, city FROM customers
analyst|b|allow|-|SELECT customer_id, sum(balance) FROM accounts GROUP BY customer_id
analyst|b|allow|-|SELECT t.amount, a.account_type FROM transactions t JOIN accounts a ON a.id = t.account_id

## HR-DDL-DROP
dev|b|block|HR-DDL-DROP|DROP TABLE customers
dev|b|block|HR-DDL-DROP|DROP TABLE IF EXISTS customers
dev|b|block|HR-DDL-DROP|drop table Customers
dev|b|block|HR-DDL-DROP|DROP TABLE accounts, transactions
dev|b|block|HR-DDL-DROP|DROP VIEW v_contacts
dev|m|block|HR-DDL-DROP|DROP DATABASE bank
dev|m|block|HR-DDL-DROP|DROP SCHEMA bank
dev|p|block|HR-DDL-DROP|DROP SCHEMA public CASCADE
dev|m|block|HR-DDL-DROP|DROP TABLE bank.customers
dev|m|block|HR-DDL-DROP|/*!32302 DROP TABLE customers */
dev|m|block|HR-DDL-DROP|/*M!100100 DROP TABLE customers */
dev|m|block|HR-DDL-DROP|SELECT 1; DROP TABLE customers
dev|p|block|HR-DDL-DROP|SELECT 1; DROP TABLE customers
dev|m|block|HR-DDL-DROP|DROP/**/TABLE/**/customers
dev|p|block|HR-DDL-DROP|DROP TABLE "customers"
dev|m|block|HR-DDL-DROP|DROP TABLE `customers`
dev|p|block|HR-DDL-DROP|DROP TABLE U&"\0063ustomers"
dba|b|review|HR-DDL-DROP|DROP TABLE customers

## HR-DDL-TRUNCATE
dev|b|block|HR-DDL-TRUNCATE|TRUNCATE customers
dev|b|block|HR-DDL-TRUNCATE|TRUNCATE TABLE accounts
dev|p|block|HR-DDL-TRUNCATE|TRUNCATE accounts, customers RESTART IDENTITY
dba|b|review|HR-DDL-TRUNCATE|TRUNCATE accounts

## HR-DML-NO-WHERE
dev|b|block|HR-DML-NO-WHERE|UPDATE accounts SET status = 'x'
dev|b|block|HR-DML-NO-WHERE|DELETE FROM accounts
dev|m|block|HR-DML-NO-WHERE|DELETE FROM accounts LIMIT 10
dev|m|block|HR-DML-NO-WHERE|UPDATE accounts SET status = 'x' ORDER BY id LIMIT 5
dev|m|block|HR-DML-NO-WHERE|UPDATE accounts a JOIN customers c ON a.customer_id = c.id SET a.status = 'x'
dev|m|block|HR-DML-NO-WHERE|delete from accounts -- WHERE id = 1
dev|m|block|HR-DML-NO-WHERE|DELETE FROM accounts /* WHERE id = 1 */
dev|p|block|HR-DML-NO-WHERE|DELETE FROM accounts RETURNING id
dev|p|block|HR-DML-NO-WHERE|UPDATE accounts SET status = 'x' FROM customers

## HR-DML-TAUTOLOGY
dev|b|block|HR-DML-TAUTOLOGY|UPDATE accounts SET status = 'x' WHERE 1=1
dev|b|block|HR-DML-TAUTOLOGY|UPDATE accounts SET status = 'x' WHERE TRUE
dev|b|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE 'a' = 'a'
dev|b|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE NOT FALSE
dev|b|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE id = id
dev|b|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE 2 > 1
dev|b|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE 1 <> 2
dev|b|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE 1 IN (1, 2)
dev|b|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE 2 BETWEEN 1 AND 3
dev|b|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE status LIKE '%'
dev|b|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE status IS NULL OR status IS NOT NULL
dev|b|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE (1 = 1) AND (2 = 2)
dev|b|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE id = 5 OR 1 = 1
dev|b|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE 1 + 1 = 2
dev|m|block|HR-DML-TAUTOLOGY|UPDATE accounts SET status = 'x' WHERE id > 0 OR 1
dev|m|block|HR-DML-TAUTOLOGY|UPDATE accounts SET status = 'x' WHERE 1
dev|m|block|HR-DML-TAUTOLOGY|UPDATE accounts SET status = 'x' WHERE '1'
dev|m|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE 1=1 -- AND id = 5
dev|m|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE 1=1 # AND id = 5
dev|m|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE 1=1 /*! */
dev|m|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE id = 5 /*! OR 1=1 */
dev|p|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE 'x' LIKE 'x'
dev|m|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE id = 5 || 1
dev|m|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE id = 5 OR 1 DIV 1
dev|b|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE id = 5 OR abs(1)
dev|b|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE id = 5 OR 2 - 1
dev|b|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE id = 5 OR length('a') > 0
dev|b|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE id = 5 OR EXISTS (SELECT 1)
dev|b|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE (id = 5) OR (now() IS NOT NULL)
dev|m|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE !0
dev|m|block|HR-DML-TAUTOLOGY|DELETE FROM accounts WHERE id <=> id
dev|b|block|HR-DML-TAUTOLOGY|UPDATE accounts SET status = 'x' WHERE id = 5 OR 'a' IS NOT NULL
dev|b|allow|-|DELETE FROM accounts WHERE id = 5 OR id = 6
dev|b|allow|-|DELETE FROM accounts WHERE id = 5 OR 1 = 0
dev|b|allow|-|DELETE FROM accounts WHERE 1 = 2 AND id = 3
dev|m|allow|-|DELETE FROM accounts WHERE id = ?
dev|m|allow|-|UPDATE accounts SET balance = balance + 1 WHERE id = ?
dev|p|allow|-|DELETE FROM accounts WHERE id = $1
dev|p|allow|-|UPDATE accounts SET balance = balance + $1 WHERE id = $2
dev|b|allow|-|DELETE FROM accounts WHERE customer_id = id
dev|b|allow|-|DELETE FROM accounts WHERE balance > customer_id OR status <> branch
dev|b|allow|-|UPDATE accounts SET status = 'x' WHERE opened_at < now()
dev|b|allow|-|DELETE FROM accounts WHERE id IN (SELECT account_id FROM transactions WHERE amount < 0)
dev|b|allow|-|DELETE FROM accounts WHERE id = 5 AND 1 = 1

## HR-DDL-ALTER-DESTRUCTIVE
dba|b|alert|HR-DDL-ALTER-DESTRUCTIVE|ALTER TABLE customers DROP COLUMN email
dba|m|alert|HR-DDL-ALTER-DESTRUCTIVE|ALTER TABLE customers DROP PRIMARY KEY
dba|m|alert|HR-DDL-ALTER-DESTRUCTIVE|ALTER TABLE customers MODIFY city VARCHAR(8)
dba|m|alert|HR-DDL-ALTER-DESTRUCTIVE|ALTER TABLE customers CHANGE city town VARCHAR(8)
dba|p|alert|HR-DDL-ALTER-DESTRUCTIVE|ALTER TABLE customers ALTER COLUMN city TYPE varchar(8)
dba|b|allow|-|ALTER TABLE customers ADD COLUMN note VARCHAR(20)
dba|b|alert|HR-DDL-ALTER-DESTRUCTIVE|ALTER TABLE customers RENAME COLUMN mobile TO m
dba|b|alert|HR-DDL-ALTER-DESTRUCTIVE|ALTER TABLE customers RENAME TO clients
dba|m|alert|HR-DDL-ALTER-DESTRUCTIVE|RENAME TABLE customers TO clients
dev|b|block|HR-DDL-ALTER-DESTRUCTIVE|ALTER TABLE customers DROP COLUMN email

## HR-PRIV-GRANT
dev|b|block|HR-PRIV-GRANT|GRANT SELECT ON customers TO someone
dev|b|block|HR-PRIV-GRANT|REVOKE SELECT ON customers FROM someone
dev|m|block|HR-PRIV-GRANT|GRANT ALL ON *.* TO 'x'@'%'
dev|p|block|HR-PRIV-GRANT|ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO x
dev|m|block|HR-PRIV-GRANT|/*!50000 GRANT ALL ON *.* TO x */
dba|b|block|HR-PRIV-GRANT|GRANT SELECT ON customers TO someone

## HR-PRIV-USER
dev|m|block|HR-PRIV-USER|CREATE USER x IDENTIFIED BY 'secret'
dev|m|block|HR-PRIV-USER|ALTER USER root IDENTIFIED BY 'x'
dev|m|block|HR-PRIV-USER|DROP USER x
dev|m|block|HR-PRIV-USER|RENAME USER a TO b
dev|m|block|HR-PRIV-USER|SHOW CREATE USER root
dev|m|block|HR-PRIV-USER|SET PASSWORD FOR root = 'x'
dev|m|block|HR-PRIV-USER|CREATE ROLE analyst2
dev|p|block|HR-PRIV-USER|CREATE ROLE x LOGIN SUPERUSER
dev|p|block|HR-PRIV-USER|ALTER ROLE sqlbastion SUPERUSER
dev|p|block|HR-PRIV-USER|CREATE USER x WITH PASSWORD 'y'
dev|p|block|HR-PRIV-USER|DROP ROLE x

## HR-PRIV-SET-ROLE
dev|p|block|HR-PRIV-SET-ROLE|SET ROLE postgres
dev|p|block|HR-PRIV-SET-ROLE|SET SESSION ROLE postgres
dev|p|block|HR-PRIV-SET-ROLE|SET SESSION AUTHORIZATION postgres
dev|p|block|HR-PRIV-SET-ROLE|RESET ROLE
dev|p|block|HR-PRIV-SET-ROLE|set role "postgres"
dev|m|block|HR-PRIV-SET-ROLE|SET ROLE ALL

## HR-SERVER-SETTINGS
dev|m|block|HR-SERVER-SETTINGS|SET GLOBAL max_connections = 1
dev|m|block|HR-SERVER-SETTINGS|SET @@global.sql_mode = ''
dev|m|block|HR-SERVER-SETTINGS|SET PERSIST max_connections = 1
dev|m|block|HR-SERVER-SETTINGS|FLUSH PRIVILEGES
dev|m|block|HR-SERVER-SETTINGS|SHUTDOWN
dev|m|block|HR-SERVER-SETTINGS|SHOW BINLOG EVENTS
dev|m|block|HR-SERVER-SETTINGS|INSTALL PLUGIN x SONAME 'x.so'
dev|p|block|HR-SERVER-SETTINGS|ALTER SYSTEM SET work_mem = '1GB'
dev|p|block|HR-SERVER-SETTINGS|SELECT set_config('search_path', 'evil', false)
dev|p|block|HR-SERVER-SETTINGS|SELECT set_config('role', 'postgres', false)
dev|p|block|HR-SERVER-SETTINGS|SELECT pg_reload_conf()
dev|p|block|HR-SERVER-SETTINGS|CHECKPOINT
dev|m|block|HR-SERVER-SETTINGS|SET sql_log_bin = 0
dev|m|block|HR-SERVER-SETTINGS|SET @@session.sql_log_off = 1
dev|p|block|HR-SERVER-SETTINGS|SET session_replication_role = replica
dev|p|block|HR-SERVER-SETTINGS|SET log_statement = 'none'

## HR-FILE-ACCESS
dev|m|block|HR-FILE-ACCESS|SELECT * FROM customers INTO OUTFILE '/tmp/x'
dev|m|block|HR-FILE-ACCESS|SELECT mobile FROM customers INTO DUMPFILE '/tmp/x'
dev|m|block|HR-FILE-ACCESS|SELECT id /*! INTO OUTFILE '/tmp/x' */ FROM customers
dev|m|block|HR-FILE-ACCESS|LOAD DATA INFILE '/etc/passwd' INTO TABLE accounts
dev|m|block|HR-FILE-ACCESS|LOAD DATA LOCAL INFILE 'x.csv' INTO TABLE accounts
dev|m|block|HR-FILE-ACCESS|LOAD XML INFILE 'x.xml' INTO TABLE accounts
dev|m|block|HR-FILE-ACCESS|SELECT load_file('/etc/passwd')
dev|m|block|HR-FILE-ACCESS|SELECT LOAD_FILE(0x2f6574632f706173737764)
dev|m|block|HR-FILE-ACCESS|SELECT id FROM customers WHERE id = length(load_file('/etc/shadow'))
dev|p|block|HR-FILE-ACCESS|COPY accounts TO '/tmp/x'
dev|p|block|HR-FILE-ACCESS|COPY accounts FROM '/etc/passwd'
dev|p|block|HR-FILE-ACCESS|COPY accounts TO PROGRAM 'curl http://x'
dev|p|block|HR-FILE-ACCESS|COPY (SELECT 1) TO PROGRAM 'id'
dev|p|block|HR-FILE-ACCESS|SELECT pg_read_file('/etc/passwd')
dev|p|block|HR-FILE-ACCESS|SELECT pg_catalog.pg_read_binary_file('/etc/passwd')
dev|p|block|HR-FILE-ACCESS|SELECT pg_ls_dir('.')
dev|p|block|HR-FILE-ACCESS|SELECT lo_import('/etc/passwd')
dev|p|block|HR-FILE-ACCESS|SELECT lo_export(1234, '/tmp/x')
dev|p|block|HR-FILE-ACCESS|SELECT lo_get(1234)
dev|p|block|HR-FILE-ACCESS|SELECT * FROM pg_largeobject
dev|p|block|HR-FILE-ACCESS|SELECT PG_READ_FILE('/etc/passwd')

## HR-DYNAMIC-SQL
dev|m|block|HR-DYNAMIC-SQL|PREPARE s FROM 'DROP TABLE customers'
dev|m|block|HR-DYNAMIC-SQL|PREPARE s FROM @q
dev|m|block|HR-DYNAMIC-SQL|EXECUTE s
dev|m|block|HR-DYNAMIC-SQL|EXECUTE s USING @a
dev|m|block|HR-DYNAMIC-SQL|CALL cleanup()
dev|m|block|HR-DYNAMIC-SQL|/*!50000 PREPARE s FROM 'x' */
dev|p|block|HR-DYNAMIC-SQL|DO $$ BEGIN EXECUTE 'DROP TABLE customers'; END $$
dev|p|block|HR-DYNAMIC-SQL|DO LANGUAGE plpgsql $x$ BEGIN NULL; END $x$
dev|p|block|HR-DYNAMIC-SQL|PREPARE s AS SELECT mobile FROM customers
dev|p|block|HR-DYNAMIC-SQL|EXECUTE s(1)
dev|p|block|HR-DYNAMIC-SQL|CALL p()
dev|p|block|HR-DYNAMIC-SQL|SELECT query_to_xml('select mobile from customers', true, true, '')
dev|p|block|HR-DYNAMIC-SQL|SELECT table_to_xml('customers', true, true, '')
dev|p|block|HR-DYNAMIC-SQL|SELECT * FROM dblink('dbname=bank', 'select mobile from customers') AS t(m text)
dev|p|block|HR-DYNAMIC-SQL|EXPLAIN EXECUTE s
dev|m|allow|-|DEALLOCATE PREPARE s
dev|p|allow|-|DEALLOCATE s

## HR-CODE-CREATE
dev|m|block|HR-CODE-CREATE|CREATE PROCEDURE p() BEGIN SELECT 1; END
dev|m|block|HR-CODE-CREATE|CREATE DEFINER=`root`@`%` PROCEDURE p() SELECT 1
dev|m|block|HR-CODE-CREATE|CREATE FUNCTION f() RETURNS INT RETURN 1
dev|m|block|HR-CODE-CREATE|CREATE TRIGGER tr BEFORE INSERT ON accounts FOR EACH ROW SET NEW.status = 'x'
dev|m|block|HR-CODE-CREATE|CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO DELETE FROM accounts
dev|m|block|HR-CODE-CREATE|ALTER EVENT e ENABLE
dev|p|block|HR-CODE-CREATE|CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql
dev|p|block|HR-CODE-CREATE|CREATE OR REPLACE FUNCTION f() RETURNS trigger AS $$ BEGIN RETURN NEW; END $$ LANGUAGE plpgsql
dev|p|block|HR-CODE-CREATE|CREATE TRIGGER tr AFTER INSERT ON accounts FOR EACH ROW EXECUTE FUNCTION f()
dev|p|block|HR-CODE-CREATE|CREATE RULE r AS ON SELECT TO accounts DO INSTEAD SELECT * FROM customers
dev|p|block|HR-CODE-CREATE|CREATE EXTENSION dblink
dev|p|block|HR-CODE-CREATE|CREATE PROCEDURE p() LANGUAGE sql AS $$ DELETE FROM accounts $$
dev|p|block|HR-CODE-CREATE|CREATE AGGREGATE agg (int) (sfunc = int4pl, stype = int)

## HR-TIMING-LOCK
dev|m|block|HR-TIMING-LOCK|SELECT SLEEP(5)
dev|m|block|HR-TIMING-LOCK|SELECT id FROM customers WHERE id = 1 AND SLEEP(3)
dev|m|block|HR-TIMING-LOCK|SELECT IF(substring(mobile,1,1)='1', sleep(2), 0) FROM customers
dev|m|block|HR-TIMING-LOCK|SELECT BENCHMARK(1000000, MD5('x'))
dev|m|block|HR-TIMING-LOCK|SELECT GET_LOCK('x', 10)
dev|m|block|HR-TIMING-LOCK|LOCK TABLES accounts WRITE
dev|m|block|HR-TIMING-LOCK|/*!50000 SELECT sleep(1) */
dev|p|block|HR-TIMING-LOCK|SELECT pg_sleep(5)
dev|p|block|HR-TIMING-LOCK|SELECT pg_sleep_for('5 minutes')
dev|p|block|HR-TIMING-LOCK|SELECT pg_advisory_lock(1)
dev|p|block|HR-TIMING-LOCK|LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE
dev|p|block|HR-TIMING-LOCK|SELECT CASE WHEN mobile LIKE '1%' THEN pg_sleep(1) END FROM customers
dev|m|allow|-|UNLOCK TABLES
dev|m|block|HR-TIMING-LOCK|DO sleep(1)
dev|m|block|HR-TIMING-LOCK|DO RELEASE_LOCK('x')
dev|m|allow|-|DO 1

## HR-OTHER-SESSIONS
dev|m|block|HR-OTHER-SESSIONS|SHOW PROCESSLIST
dev|m|block|HR-OTHER-SESSIONS|SHOW FULL PROCESSLIST
dev|m|block|HR-OTHER-SESSIONS|SHOW ENGINE INNODB STATUS
dev|m|block|HR-OTHER-SESSIONS|KILL 12
dev|m|block|HR-OTHER-SESSIONS|KILL QUERY 12
dev|m|block|HR-OTHER-SESSIONS|SELECT * FROM information_schema.processlist
dev|m|block|HR-OTHER-SESSIONS|SELECT * FROM INFORMATION_SCHEMA.PROCESSLIST
dev|m|block|HR-OTHER-SESSIONS|SELECT sql_text FROM performance_schema.events_statements_history
dev|m|block|HR-OTHER-SESSIONS|SELECT * FROM sys.processlist
dev|m|block|HR-OTHER-SESSIONS|EXPLAIN FOR CONNECTION 12
dev|p|block|HR-OTHER-SESSIONS|SELECT * FROM pg_stat_activity
dev|p|block|HR-OTHER-SESSIONS|SELECT query FROM pg_catalog.pg_stat_activity
dev|p|block|HR-OTHER-SESSIONS|SELECT pg_terminate_backend(123)
dev|p|block|HR-OTHER-SESSIONS|SELECT pg_cancel_backend(pid) FROM pg_stat_activity
dev|p|block|HR-OTHER-SESSIONS|SELECT * FROM pg_locks
dev|p|block|HR-OTHER-SESSIONS|LISTEN channel
dev|p|block|HR-OTHER-SESSIONS|NOTIFY channel, 'x'
dev|p|block|HR-OTHER-SESSIONS|SELECT pg_notify('c', mobile) FROM customers
dev|p|block|HR-OTHER-SESSIONS|SELECT * FROM pg_prepared_statements

## HR-PLANNER-STATS
dev|p|block|HR-PLANNER-STATS|SELECT * FROM pg_stats WHERE tablename = 'customers'
dev|p|block|HR-PLANNER-STATS|SELECT most_common_vals FROM pg_catalog.pg_stats
dev|p|block|HR-PLANNER-STATS|SELECT * FROM pg_statistic
dev|p|block|HR-PLANNER-STATS|SELECT * FROM pg_stats_ext
dev|m|block|HR-PLANNER-STATS|SELECT * FROM mysql.column_stats
dev|m|block|HR-PLANNER-STATS|SELECT * FROM information_schema.column_statistics

## HR-HANDLER
dev|m|block|HR-HANDLER|HANDLER customers OPEN
dev|m|block|HR-HANDLER|HANDLER customers READ FIRST
dev|m|block|HR-HANDLER|handler customers read next

## HR-EXPLAIN-ANALYZE-WRITE
dev|b|block|HR-EXPLAIN-ANALYZE-WRITE|EXPLAIN ANALYZE DELETE FROM accounts WHERE id = 1
dev|b|block|HR-EXPLAIN-ANALYZE-WRITE|EXPLAIN ANALYZE UPDATE accounts SET status = 'x' WHERE id = 1
dev|p|block|HR-EXPLAIN-ANALYZE-WRITE|EXPLAIN (ANALYZE, BUFFERS) INSERT INTO accounts (id) VALUES (1)
dev|p|block|HR-EXPLAIN-ANALYZE-WRITE|EXPLAIN (ANALYZE true, FORMAT json) DELETE FROM accounts WHERE id = 2
dev|p|block|HR-EXPLAIN-ANALYZE-WRITE|EXPLAIN ANALYSE DELETE FROM accounts WHERE id = 1
dev|b|allow|-|EXPLAIN DELETE FROM accounts WHERE id = 1
dev|b|allow|-|EXPLAIN ANALYZE SELECT id FROM accounts WHERE id = 1

## HR-SYSTEM-TABLES
dev|m|block|HR-SYSTEM-TABLES|SELECT user, authentication_string FROM mysql.user
dev|p|block|HR-SYSTEM-TABLES|SELECT rolpassword FROM pg_authid
dev|p|block|HR-SYSTEM-TABLES|SELECT * FROM pg_shadow

## SB-GRANT-DENIED
analyst|b|block|SB-GRANT-DENIED|SELECT id_card FROM customers
analyst|b|block|SB-GRANT-DENIED|SELECT * FROM customers
analyst|b|block|SB-GRANT-DENIED|SELECT c.* FROM customers c
analyst|b|block|SB-GRANT-DENIED|SELECT email FROM customers WHERE id = 1
analyst|b|block|SB-GRANT-DENIED|SELECT id FROM customers WHERE address = 'x'
analyst|b|block|SB-GRANT-DENIED|SELECT card_no FROM accounts
analyst|b|block|SB-GRANT-DENIED|SELECT memo FROM transactions
analyst|b|block|SB-GRANT-DENIED|SELECT x.e FROM (SELECT email AS e FROM customers) x
analyst|b|block|SB-GRANT-DENIED|SELECT id FROM customers ORDER BY id_card
analyst|b|block|SB-GRANT-DENIED|UPDATE accounts SET status = 'x' WHERE id = 1
analyst|b|block|SB-GRANT-DENIED|INSERT INTO accounts (id) VALUES (1)
analyst|b|block|SB-GRANT-DENIED|DELETE FROM accounts WHERE id = 1
analyst|b|block|SB-GRANT-DENIED|SELECT * FROM branches
analyst|m|block|SB-GRANT-DENIED|SELECT * FROM other.notes
analyst|b|block|SB-GRANT-DENIED|SELECT id FROM customers UNION SELECT id_card FROM customers
analyst|b|block|SB-GRANT-DENIED|CREATE TABLE t (id int)
dev|m|block|SB-GRANT-DENIED|SELECT * FROM other.notes
dev|b|block|SB-GRANT-DENIED|CREATE TABLE t2 (id int)
dev|b|block|SB-GRANT-DENIED|CREATE INDEX i ON accounts (status)
dev|p|block|SB-GRANT-DENIED|COPY accounts TO STDOUT
dev|p|block|SB-GRANT-DENIED|COPY (SELECT id FROM accounts) TO STDOUT
dev|p|block|SB-GRANT-DENIED|VACUUM accounts
dev|m|block|SB-GRANT-DENIED|OPTIMIZE TABLE accounts

## SB-DUTY
auditor|b|block|SB-DUTY|SELECT id FROM customers
auditor|b|block|SB-DUTY|DELETE FROM accounts WHERE id = 1

## SB-ADMISSION
nobody|b|block|SB-ADMISSION|SELECT 1

## MASK-INFERENCE
dev|b|block|MASK-INFERENCE|SELECT id FROM customers WHERE mobile LIKE '138%'
dev|b|block|MASK-INFERENCE|SELECT id FROM customers WHERE mobile > '138'
dev|b|block|MASK-INFERENCE|SELECT id FROM customers WHERE mobile BETWEEN '138' AND '139'
dev|b|block|MASK-INFERENCE|SELECT id FROM customers WHERE substring(mobile, 1, 3) = '138'
dev|b|block|MASK-INFERENCE|SELECT id FROM customers WHERE id_card = '110101199003071234'
dev|b|block|MASK-INFERENCE|SELECT id FROM customers ORDER BY mobile
dev|b|block|MASK-INFERENCE|SELECT id, mobile FROM customers ORDER BY 2
dev|b|block|MASK-INFERENCE|SELECT mobile AS m FROM customers ORDER BY m
dev|b|block|MASK-INFERENCE|SELECT count(*) FROM customers GROUP BY mobile
dev|b|block|MASK-INFERENCE|SELECT DISTINCT mobile FROM customers
dev|b|block|MASK-INFERENCE|SELECT mobile FROM customers UNION SELECT '13800000000'
dev|b|block|MASK-INFERENCE|SELECT mobile FROM customers INTERSECT SELECT '13800000000'
dev|b|block|MASK-INFERENCE|SELECT mobile FROM customers EXCEPT SELECT '13800000000'
dev|b|block|MASK-INFERENCE|SELECT c.id FROM customers c JOIN accounts a ON a.card_no = c.mobile
dev|b|block|MASK-INFERENCE|SELECT id FROM customers WHERE mobile = city
dev|b|block|MASK-INFERENCE|SELECT id FROM customers WHERE id IN (SELECT id FROM customers WHERE mobile LIKE '1%')
dev|b|block|MASK-INFERENCE|SELECT id FROM accounts a WHERE EXISTS (SELECT 1 FROM customers c WHERE c.mobile LIKE '13%')
dev|b|block|MASK-INFERENCE|SELECT x.id FROM (SELECT id, mobile AS m FROM customers) x WHERE x.m LIKE '1%'
dev|b|block|MASK-INFERENCE|WITH c AS (SELECT id, mobile FROM customers) SELECT id FROM c WHERE mobile > '1'
dev|b|block|MASK-INFERENCE|SELECT id FROM v_contacts WHERE phone LIKE '1%'
dev|b|block|MASK-INFERENCE|SELECT id FROM customers WHERE length(mobile) = 11
dev|b|block|MASK-INFERENCE|SELECT city FROM customers GROUP BY city HAVING max(mobile) > '1'
dev|b|block|MASK-INFERENCE|SELECT id, row_number() OVER (ORDER BY mobile) FROM customers
dev|b|block|MASK-INFERENCE|SELECT id FROM customers WHERE name = 'x'
dev|b|block|MASK-INFERENCE|SELECT id FROM customers WHERE mobile IS NULL
dev|b|block|MASK-INFERENCE|EXPLAIN SELECT id FROM customers WHERE mobile LIKE '1%'
dev|m|block|MASK-INFERENCE|SELECT id FROM customers WHERE mobile REGEXP '^138'
dev|m|block|MASK-INFERENCE|SELECT id FROM customers WHERE mobile = _utf8mb4'138' COLLATE utf8mb4_bin OR mobile < '2'
dev|p|block|MASK-INFERENCE|SELECT id FROM customers WHERE mobile ~ '^138'
dev|p|block|MASK-INFERENCE|SELECT id FROM customers WHERE mobile ILIKE '138%'
dev|p|block|MASK-INFERENCE|SELECT DISTINCT ON (mobile) id FROM customers
dev|p|block|MASK-INFERENCE|SELECT id FROM customers WHERE U&"\006Dobile" LIKE '1%'
dev|p|block|MASK-INFERENCE|SELECT id FROM customers WHERE "mobile" LIKE '1%'
dev|p|block|MASK-INFERENCE|SELECT id FROM customers c WHERE (c).mobile LIKE '1%'
dev|b|block|MASK-INFERENCE|SELECT c.id FROM customers c NATURAL JOIN (SELECT '13800000000' AS mobile) x
dev|b|block|MASK-INFERENCE|SELECT id FROM customers WHERE (mobile, id) = ('1', 1)
dev|m|block|MASK-INFERENCE|SELECT id FROM customers HAVING mobile LIKE '1%'
dev|b|block|MASK-INFERENCE|SELECT mobile AS id FROM customers ORDER BY id
dev|b|block|MASK-INFERENCE|SELECT (SELECT count(*) FROM customers c2 WHERE c2.mobile < c.mobile) FROM customers c
dev|b|block|MASK-INFERENCE|SELECT id, count(*) OVER (PARTITION BY mobile) FROM customers
dev|b|block|MASK-INFERENCE|DELETE FROM customers WHERE mobile LIKE '1%'
dev|p|block|MASK-INFERENCE|SELECT 1 FROM accounts LIMIT CASE WHEN (SELECT mobile FROM customers WHERE id = 1) LIKE '1%' THEN 1 ELSE 0 END
dev|p|block|MASK-INFERENCE|SELECT 1 FROM accounts OFFSET (SELECT length(mobile) FROM customers WHERE id = 1)
dev|p|block|MASK-INFERENCE|SELECT * FROM generate_series(1, (SELECT length(mobile) FROM customers WHERE id = 1))
dev|p|allow|-|SELECT * FROM generate_series(1, 10)
dev|b|allow|-|SELECT id FROM accounts LIMIT 10 OFFSET 20
dev|b|block|MASK-INFERENCE|SELECT id, row_number() OVER w FROM customers WINDOW w AS (ORDER BY mobile)
dev|p|block|MASK-INFERENCE|SELECT id, rank() OVER w FROM customers WINDOW w AS (PARTITION BY mobile)
dev|p|block|MASK-INFERENCE|SELECT id FROM customers FETCH FIRST (SELECT length(mobile) FROM customers LIMIT 1) ROWS ONLY
dev|b|allow|-|SELECT id, row_number() OVER w FROM customers WINDOW w AS (ORDER BY id)
dev|p|allow|-|SELECT id FROM accounts FETCH FIRST 5 ROWS ONLY
dev|b|allow|-|DELETE FROM customers WHERE mobile = '13800000000'
dev|m|block|MASK-INFERENCE|UPDATE customers SET city = 'x' WHERE id > 5 ORDER BY mobile LIMIT 1
dev|m|block|MASK-INFERENCE|DELETE FROM customers WHERE id > 5 ORDER BY mobile LIMIT 1
dev|m|allow|-|DELETE FROM accounts WHERE id > 5 ORDER BY id LIMIT 1
dev|p|block|MASK-INFERENCE|MERGE INTO accounts a USING customers c ON a.customer_id = c.id WHEN MATCHED AND c.mobile LIKE '1%' THEN DELETE
dev|p|allow|-|MERGE INTO accounts a USING branches b ON a.id = b.id WHEN MATCHED THEN UPDATE SET branch = b.city
dev|p|block|MASK-INFERENCE|INSERT INTO customers (id, city) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET city = excluded.city WHERE customers.mobile LIKE '1%'
dev|p|allow|-|INSERT INTO customers (id, city) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET city = excluded.city WHERE customers.id > 0
dev|b|block|MASK-UNPROVABLE|SELECT customers.mobile FROM customers AS c

## MASK-TRANSFORM
dev|b|block|MASK-TRANSFORM|SELECT hex(mobile) FROM customers
dev|b|block|MASK-TRANSFORM|SELECT upper(name) FROM customers
dev|b|block|MASK-TRANSFORM|SELECT substring(mobile, 1, 3) FROM customers
dev|b|block|MASK-TRANSFORM|SELECT reverse(mobile) FROM customers
dev|b|block|MASK-TRANSFORM|SELECT md5(mobile) FROM customers
dev|b|block|MASK-TRANSFORM|SELECT mobile || '' FROM customers
dev|b|block|MASK-TRANSFORM|SELECT concat(mobile, '') FROM customers
dev|b|block|MASK-TRANSFORM|SELECT CAST(mobile AS CHAR(20)) FROM customers
dev|b|block|MASK-TRANSFORM|SELECT CASE WHEN id > 0 THEN mobile END FROM customers
dev|b|block|MASK-TRANSFORM|SELECT coalesce(mobile, 'x') FROM customers
dev|b|block|MASK-TRANSFORM|SELECT min(mobile) FROM customers
dev|b|block|MASK-TRANSFORM|SELECT max(id_card) FROM customers
dev|b|block|MASK-TRANSFORM|SELECT (SELECT mobile FROM customers LIMIT 1)
dev|b|block|MASK-TRANSFORM|SELECT id, (SELECT max(c.mobile) FROM customers c) FROM accounts
dev|b|block|MASK-TRANSFORM|SELECT lower(x.m) FROM (SELECT mobile m FROM customers) x
dev|b|block|MASK-TRANSFORM|SELECT upper(phone) FROM v_contacts
dev|m|block|MASK-TRANSFORM|SELECT GROUP_CONCAT(mobile) FROM customers
dev|m|block|MASK-TRANSFORM|SELECT to_base64(mobile) FROM customers
dev|m|block|MASK-TRANSFORM|SELECT CAST(mobile AS BINARY) FROM customers
dev|m|block|MASK-TRANSFORM|SELECT mobile COLLATE utf8mb4_bin FROM customers
dev|m|block|MASK-TRANSFORM|SELECT JSON_OBJECT('m', mobile) FROM customers
dev|m|block|MASK-TRANSFORM|SELECT CONVERT(mobile USING latin1) FROM customers
dev|p|block|MASK-TRANSFORM|SELECT string_agg(mobile, ',') FROM customers
dev|p|block|MASK-TRANSFORM|SELECT array_agg(mobile) FROM customers
dev|p|block|MASK-TRANSFORM|SELECT json_build_object('m', mobile) FROM customers
dev|p|block|MASK-TRANSFORM|SELECT row_to_json(c) FROM customers c
dev|p|block|MASK-TRANSFORM|SELECT to_json(c) FROM customers c
dev|p|block|MASK-TRANSFORM|SELECT c::text FROM customers c
dev|p|block|MASK-TRANSFORM|SELECT (c).mobile FROM customers c
dev|p|block|MASK-TRANSFORM|SELECT mobile::bytea FROM customers
dev|p|block|MASK-TRANSFORM|SELECT encode(mobile::bytea, 'hex') FROM customers
dev|p|block|MASK-TRANSFORM|SELECT ROW(id, mobile) FROM customers
dev|p|block|MASK-TRANSFORM|WITH RECURSIVE r AS (SELECT id, mobile FROM customers UNION ALL SELECT id, mobile FROM r) SELECT mobile FROM r
dev|p|block|MASK-TRANSFORM|SELECT x FROM customers c, LATERAL (SELECT c.mobile || '') AS l(x)

## MASK-COPY
dev|b|block|MASK-COPY|INSERT INTO accounts (branch) SELECT mobile FROM customers
dev|b|block|MASK-COPY|INSERT INTO branches (id, city) SELECT id, mobile FROM customers
dev|b|block|MASK-COPY|UPDATE accounts SET branch = (SELECT mobile FROM customers WHERE id = 1) WHERE id = 1
dev|b|block|MASK-COPY|CREATE TABLE stolen AS SELECT mobile FROM customers
dev|b|block|MASK-COPY|CREATE VIEW v2 AS SELECT mobile FROM customers
dev|m|block|MASK-COPY|SELECT mobile INTO @m FROM customers LIMIT 1
dev|m|block|MASK-COPY|SELECT id, mobile FROM customers WHERE id = 1 INTO @a, @b
dev|m|block|MASK-COPY|SELECT x.m FROM (SELECT mobile AS m FROM customers) x LIMIT 1 INTO @a
dev|m|allow|-|SELECT id, city FROM customers WHERE id = 1 INTO @a, @b
dev|m|block|MASK-COPY|SET @m = (SELECT mobile FROM customers LIMIT 1)
dev|m|block|MASK-COPY|SELECT @m := mobile FROM customers
dev|m|block|MASK-COPY|CREATE TEMPORARY TABLE t AS SELECT id_card FROM customers
dev|m|block|MASK-COPY|UPDATE accounts a JOIN customers c ON c.id = a.customer_id SET a.branch = c.mobile WHERE a.id = 1
dev|p|block|MASK-COPY|SELECT mobile INTO TEMP stolen FROM customers
dev|p|block|MASK-COPY|CREATE TEMP TABLE t AS SELECT mobile FROM customers
dev|p|block|MASK-COPY|INSERT INTO branches (id, city) SELECT id, mobile FROM customers RETURNING id
dev|p|block|MASK-COPY|UPDATE accounts a SET branch = c.mobile FROM customers c WHERE c.id = a.customer_id
dev|b|block|MASK-COPY|WITH x AS (SELECT id, mobile FROM customers) INSERT INTO accounts (id, branch) SELECT id, mobile FROM x
dev|p|block|MASK-COPY|WITH x AS (SELECT id, mobile FROM customers) UPDATE accounts SET branch = x.mobile FROM x WHERE x.id = accounts.customer_id
dev|b|allow|-|WITH x AS (SELECT id FROM customers WHERE city = 'c') DELETE FROM accounts WHERE customer_id IN (SELECT id FROM x)
dev|b|allow|-|WITH x AS (SELECT id, city FROM customers) INSERT INTO branches (id, city) SELECT id, city FROM x
dev|b|block|MASK-COPY|INSERT INTO accounts (id, branch) VALUES (9, (SELECT mobile FROM customers WHERE id = 1))
dev|m|block|MASK-COPY|INSERT INTO accounts SET branch = (SELECT mobile FROM customers LIMIT 1)
dev|p|block|MASK-COPY|CREATE MATERIALIZED VIEW mv AS SELECT mobile FROM customers
dev|p|block|SB-UNPROVABLE-TYPE|WITH x AS (DELETE FROM accounts RETURNING *) SELECT * FROM x
dev|p|block|SB-UNPROVABLE-TYPE|WITH x AS (UPDATE accounts SET status = 'x' WHERE id = 1 RETURNING id) SELECT id FROM x

## MASK-DENY and MASK-UNPROVABLE
dev|p|block|MASK-UNPROVABLE|DECLARE c CURSOR FOR SELECT mobile FROM customers
dev|p|block|MASK-UNPROVABLE|DECLARE c BINARY CURSOR FOR SELECT * FROM customers
dev|b|block|MASK-UNPROVABLE|SELECT * FROM unknown_table
dev|b|block|MASK-UNPROVABLE|SELECT mobile FROM customers JOIN unknown_table u ON u.id = customers.id
dba|p|allow|-|DECLARE c CURSOR FOR SELECT mobile FROM customers

dev|b|block|MASK-DENY|SELECT memo FROM transactions WHERE id = 1
dev|b|block|MASK-DENY|SELECT t.* FROM transactions t WHERE t.id = 1
dev|b|block|MASK-DENY|SELECT x.m FROM (SELECT memo AS m FROM transactions) x
dba|b|allow|-|SELECT memo FROM transactions WHERE id = 1

## MASK-SIDE-CHANNEL
dev|m|block|MASK-SIDE-CHANNEL|SHOW WARNINGS
dev|m|block|MASK-SIDE-CHANNEL|SHOW ERRORS
dba|m|allow|-|SHOW WARNINGS

## SB-UNKNOWN-FUNCTION and SB-UNPROVABLE-FUNCTION
dev|b|block|SB-UNKNOWN-FUNCTION|SELECT my_func(1)
dev|b|block|SB-UNKNOWN-FUNCTION|SELECT id, my_func(city) FROM customers
dev|b|block|SB-UNPROVABLE-FUNCTION|SELECT my_func(mobile) FROM customers
dev|b|block|SB-UNPROVABLE-FUNCTION|SELECT id FROM customers WHERE my_func(mobile) = 1
dba|b|alert|SB-UNKNOWN-FUNCTION|SELECT my_func(1)

## SB-UNPROVABLE-PARSE / COMMAND / TYPE
dev|b|block|SB-UNPROVABLE-PARSE|SELEC id FROM customers
dev|b|block|SB-UNPROVABLE-PARSE|SELECT id FROM customers WHERE
dev|b|block|SB-UNPROVABLE-PARSE|SELECT (((1)
dev|m|block|MASK-TRANSFORM|SELECT mobile--1 FROM customers
dev|m|block|MASK-TRANSFORM|SELECT id, mobile--1\nFROM customers
dev|b|block|SB-UNPROVABLE-TYPE|FOO BAR
dev|m|block|SB-UNPROVABLE-TYPE|SHOW FANCY THINGS
dev|p|block|SB-GRANT-DENIED|SECURITY LABEL ON TABLE customers IS 'x'
dev|b|block|SB-UNPROVABLE-TYPE|123
dev|b|block|SB-UNPROVABLE-TYPE|'a string'
dba|b|review|SB-UNPROVABLE-PARSE|SELEC 1
dba|p|review|SB-UNPROVABLE-COMMAND|CREATE TABLESPACE ts LOCATION '/tmp/ts'
dev|p|block|SB-UNPROVABLE-ANALYSIS|A?

## SB-UNPROVABLE-LEXER and SB-UNPROVABLE-CHARSET
dev|m|block|SB-UNPROVABLE-LEXER|SELECT 'unterminated
dev|m|block|SB-UNPROVABLE-LEXER|SELECT 1 /* unterminated
dev|m|block|SB-UNPROVABLE-LEXER|SELECT 1 /*! SELECT /*! nested */ */
dev|m|block|SB-UNPROVABLE-LEXER|SELECT 1 /*! unterminated executable
dev|m|block|SB-UNPROVABLE-LEXER|SELECT 1 /*!50000 ; DROP TABLE customers */
dev|m|block|SB-UNPROVABLE-LEXER|SELECT 1 /*!99999 '*/ ; DROP TABLE customers; /* ' */
dev|m|block|SB-UNPROVABLE-LEXER|SELECT id /*!99999 '*/ , mobile FROM customers WHERE mobile LIKE '1%' /* ' */
dev|m|block|SB-UNPROVABLE-LEXER|SET sql_mode = 'ANSI_QUOTES'; SELECT "mobile" FROM customers
dev|m|block|SB-UNPROVABLE-LEXER|SET sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')
dev|m|block|SB-UNPROVABLE-LEXER|SET sql_mode = @saved
dev|m|block|SB-UNPROVABLE-LEXER|USE bank; SELECT mobile FROM customers
dev|m|block|SB-UNPROVABLE-LEXER|SET STATEMENT sql_mode = 'ANSI_QUOTES' FOR SELECT 1
dev|m|block|SB-UNPROVABLE-CHARSET|SET NAMES gbk
dev|m|block|SB-UNPROVABLE-CHARSET|SET NAMES 'big5'
dev|m|block|SB-UNPROVABLE-CHARSET|SET NAMES sjis
dev|m|block|SB-UNPROVABLE-CHARSET|SET CHARACTER SET cp932
dev|m|block|SB-UNPROVABLE-CHARSET|SET character_set_client = gbk
dev|m|block|SB-UNPROVABLE-CHARSET|SET character_set_connection = 'gb18030'
dev|m|block|SB-UNPROVABLE-CHARSET|/*!40101 SET NAMES gbk */
dev|p|block|SB-UNPROVABLE-CHARSET|SET client_encoding = 'SJIS'
dev|p|block|SB-UNPROVABLE-CHARSET|SET client_encoding TO big5
dev|p|block|SB-UNPROVABLE-CHARSET|SET NAMES 'GBK'
dev|p|block|SB-UNPROVABLE-LEXER|SET LOCAL standard_conforming_strings = off
dev|p|block|SB-UNPROVABLE-LEXER|SET standard_conforming_strings = off; SELECT 1
dev|p|block|SB-UNPROVABLE-LEXER|SET standard_conforming_strings = sometimes
dev|p|block|SB-UNPROVABLE-LEXER|SELECT set_config('standard_conforming_strings', 'off', false)
dev|p|block|SB-UNPROVABLE-LEXER|SELECT 'unterminated
dev|p|block|SB-UNPROVABLE-LEXER|SELECT $$unterminated
dev|p|block|SB-UNPROVABLE-LEXER|SELECT 1 /* nested /* comment */
dev|p|block|SB-UNPROVABLE-LEXER|SET search_path TO evil; SELECT * FROM customers
dba|m|block|SB-UNPROVABLE-CHARSET|SET NAMES gbk
dba|p|block|SB-UNPROVABLE-LEXER|SET LOCAL standard_conforming_strings = off

## SB-LIMIT-DEPTH
dev|b|block|SB-LIMIT-DEPTH|SELECT {deep}

## DBA break-glass and overrides
dba|m|review|HR-DYNAMIC-SQL|CALL maintenance()
dba|p|review|HR-CODE-CREATE|CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql
dba|b|block|HR-TIMING-LOCK|SELECT sleep(1)

## custom rule CUST-TX-DELETE
dev|b|block|CUST-TX-DELETE|DELETE FROM transactions WHERE id = 1
dev|m|block|CUST-TX-DELETE|DELETE FROM bank.transactions WHERE id = 1
dba|b|block|CUST-TX-DELETE|DELETE FROM transactions WHERE id = 1
dev|b|allow|-|SELECT id FROM transactions WHERE id = 1
## more shapes (regressions)
dev|p|block|MASK-INFERENCE|SELECT id FROM customers ORDER BY mobile COLLATE "C"
dev|p|block|MASK-INFERENCE|SELECT id FROM customers WHERE mobile::bigint > 1
dev|m|block|MASK-INFERENCE|SELECT id FROM customers WHERE MATCH(address) AGAINST ('x')
dev|m|block|MASK-INFERENCE|SELECT id FROM customers WHERE mobile SOUNDS LIKE 'x'
dev|p|block|MASK-INFERENCE|SELECT id FROM customers WHERE mobile IN (SELECT '1')
dev|p|block|MASK-INFERENCE|SELECT id FROM customers WHERE mobile = ANY(ARRAY['1','2'])
dev|p|block|MASK-TRANSFORM|SELECT c FROM customers c
dev|p|block|MASK-TRANSFORM|SELECT ROW(c.*) FROM customers c
dev|p|block|MASK-TRANSFORM|SELECT c.*::text FROM customers c
dev|p|block|MASK-TRANSFORM|SELECT jsonb_agg(c) FROM customers c
dev|p|block|SB-UNPROVABLE-FUNCTION|SELECT hstore(c) FROM customers c
dev|p|block|MASK-TRANSFORM|SELECT format('%s', c) FROM customers c
dev|p|block|MASK-TRANSFORM|SELECT array_to_string(ARRAY[mobile], ',') FROM customers
dev|p|allow|-|SELECT s.* FROM (SELECT * FROM customers) s WHERE s.id = 1
dev|p|allow|-|SELECT * FROM customers NATURAL JOIN accounts
dev|m|allow|-|SELECT * FROM customers JOIN accounts USING (id)
dev|m|allow|-|SELECT mobile FROM customers WHERE id = 1 UNION ALL SELECT city FROM customers
dev|m|block|MASK-INFERENCE|SELECT id FROM customers WHERE id = 1 AND mobile = '1' AND mobile LIKE '1%'
dev|m|block|MASK-TRANSFORM|SELECT IF(mobile LIKE '1%', 1, 0) FROM customers
dev|m|block|MASK-INFERENCE|SELECT id FROM customers WHERE CASE WHEN mobile LIKE '1%' THEN 1 ELSE 0 END = 1
dev|m|block|MASK-TRANSFORM|SELECT LENGTH(mobile) FROM customers
dev|m|block|MASK-TRANSFORM|SELECT mobile IS NULL FROM customers
dev|m|block|SB-UNPROVABLE-PARSE|SELECT * FROM customers WHERE id = 1 PROCEDURE ANALYSE()
dev|m|allow|-|TABLE customers
dev|m|allow|-|SELECT * FROM customers c WHERE c.mobile = '1' OR c.mobile = '2'
dev|m|block|MASK-INFERENCE|SELECT * FROM customers WHERE mobile = BINARY '1'
dev|m|block|MASK-INFERENCE|SELECT * FROM customers WHERE mobile = CONCAT('1', '2')
dev|m|block|MASK-TRANSFORM|SELECT CONVERT(mobile, CHAR) FROM customers
dev|m|block|MASK-INFERENCE|SELECT * FROM customers WHERE id IN (SELECT customer_id FROM accounts WHERE card_no LIKE '6%')
"""

DEEP = "(" * 300 + "1" + ")" * 300


def cases() -> list[tuple[str, str, str, str, str]]:
    out: list[tuple[str, str, str, str, str]] = []
    for line in CORPUS.splitlines():
        if not line.strip() or line.startswith("##"):
            continue
        person, dialect, action, rule, sql = line.split("|", 4)
        sql = sql.replace("{deep}", DEEP).replace("\\n", "\n")
        dialects = ("mysql", "postgres") if dialect == "b" else ("mysql",) if dialect == "m" else ("postgres",)
        for d in dialects:
            out.append((person, d, action, rule, sql))
    return out
