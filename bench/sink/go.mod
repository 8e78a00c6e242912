module streamproc/bench/sink

go 1.22
