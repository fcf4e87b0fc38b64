// Package fuzz holds qmgate's fuzz targets across packages: the netstring
// reader and whole QMTP and QMQP server sessions fed arbitrary bytes. Seed
// corpora live in testdata/fuzz/<Target>/ and are committed; .ci/run runs
// each target briefly, and fuzz/run runs them for as long as you like.
package fuzz
