DROP TABLE evidence_links;
DROP TABLE evidence;
