-- The tables the bench's routes read, with the columns, keys and defaults of the original API's
-- PostgreSQL schema (its bots table has no index on user_id either).
CREATE TABLE IF NOT EXISTS users (
  id varchar(255) PRIMARY KEY,
  username varchar(255) NOT NULL UNIQUE,
  email varchar(255) NOT NULL UNIQUE,
  password_hash varchar(255) NOT NULL,
  first_name varchar(255),
  last_name varchar(255),
  is_active boolean NOT NULL DEFAULT true,
  is_email_verified boolean NOT NULL DEFAULT false,
  last_login_at timestamptz,
  metadata jsonb DEFAULT '{}'::jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS custom_bots (
  id varchar(255) PRIMARY KEY,
  user_id varchar(255) NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  name varchar(255) NOT NULL,
  version varchar(50) NOT NULL,
  config jsonb NOT NULL,
  file_path varchar(500),
  status varchar(50) NOT NULL DEFAULT 'pending_review',
  marketplace jsonb,
  review jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS bots (
  id varchar(255) PRIMARY KEY,
  user_id varchar(255) NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  custom_bot_id varchar(255) NOT NULL REFERENCES custom_bots (id) ON DELETE CASCADE,
  name varchar(255) NOT NULL,
  config jsonb NOT NULL,
  topic varchar(255),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
