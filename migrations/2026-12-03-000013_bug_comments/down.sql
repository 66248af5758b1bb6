DROP TABLE bug_comments;
