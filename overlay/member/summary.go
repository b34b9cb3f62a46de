package member

import "encoding/binary"

// SummaryBuckets is how many ranges of ids a digest summary splits the
// records into (by the first byte of the id a record is keyed by).
const SummaryBuckets = 64

// Summary is a digest in SummaryBuckets numbers: for each range of ids, the
// sum of a 64-bit hash of every (kind, id, version) held in it. Two stores
// holding the same versions have the same summary, whatever the order the
// records came in; a range whose sums differ holds a record one side has
// in another version or not at all. A summary costs a fixed 512 bytes,
// where a digest costs 41 bytes a record.
type Summary [SummaryBuckets]uint64

// SummaryBucket returns the range k falls in.
func SummaryBucket(k RecordKey) int { return int(k.Node[0]) * SummaryBuckets / 256 }

// Summarize sums the digest entries by range.
func Summarize(d []DigestEntry) Summary {
	var s Summary
	for _, e := range d {
		s[SummaryBucket(e.RecordKey)] += entryHash(e)
	}
	return s
}

// entryHash is FNV-1a (64 bits) of the entry's kind, id and version.
func entryHash(e DigestEntry) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	mix := func(b byte) { h = (h ^ uint64(b)) * prime }
	mix(byte(e.Kind))
	for _, b := range e.Node {
		mix(b)
	}
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], e.Version)
	for _, b := range v {
		mix(b)
	}
	return h
}
