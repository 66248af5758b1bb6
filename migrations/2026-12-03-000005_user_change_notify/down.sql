DROP TRIGGER users_notify_change ON users;
DROP FUNCTION bughive_notify_user_changed();
