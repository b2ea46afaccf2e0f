-- A node leaves: its lease and everything it held. ARGV: prefix, node.
redis.call('DEL', lease_key(ARGV[2]))
drop_node(ARGV[2])
return 1
