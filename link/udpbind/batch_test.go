package udpbind

import (
	"bytes"
	"slices"
	"testing"
)

func lens(n ...int) [][]byte {
	var bufs [][]byte
	for _, l := range n {
		bufs = append(bufs, make([]byte, l))
	}
	return bufs
}

func rep(l, n int) []int {
	var s []int
	for range n {
		s = append(s, l)
	}
	return s
}

func TestCoalesce(t *testing.T) {
	type msg struct{ first, count, seg int }
	for _, c := range []struct {
		name string
		lens []int
		max  int
		want []msg
	}{
		{"one", []int{1200}, maxPayload4, []msg{{0, 1, 1200}}},
		{"run", rep(1200, 5), maxPayload4, []msg{{0, 5, 1200}}},
		{"short tail ends run", []int{1200, 1200, 800, 1200}, maxPayload4, []msg{{0, 3, 1200}, {3, 1, 1200}}},
		{"longer starts anew", []int{800, 1200, 1200}, maxPayload4, []msg{{0, 1, 800}, {1, 2, 1200}}},
		{"at most 64", rep(100, 130), maxPayload4, []msg{{0, 64, 100}, {64, 64, 100}, {128, 2, 100}}},
		{"payload bound", rep(30000, 3), maxPayload4, []msg{{0, 2, 30000}, {2, 1, 30000}}},
		{"empty alone", []int{0, 0, 100, 0}, maxPayload4, []msg{{0, 1, 0}, {1, 1, 0}, {2, 1, 100}, {3, 1, 0}}},
		{"none", nil, maxPayload4, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got []msg
			for _, g := range coalesce(nil, lens(c.lens...), 0, c.max) {
				got = append(got, msg{g.first, g.count, g.seg})
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("coalesce(%v) = %v, want %v", c.lens, got, c.want)
			}
		})
	}
}

// splitCase runs split on messages made of datagrams (each message's
// datagrams are ds[k], all but the last of size segs[k]) placed from at on.
func splitCase(t *testing.T, n, at int, msgs [][][]byte, segs []int) (out [][]byte, origin []int, dropped int) {
	t.Helper()
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, 1<<16)
	}
	sizes := make([]int, n)
	sg := make([]int, n)
	for k, m := range msgs {
		sizes[at+k] = copy(bufs[at+k], bytes.Join(m, nil))
		sg[at+k] = segs[k]
	}
	orig := make([]int, n)
	got, dropped := split(bufs, sizes, sg, orig, at, len(msgs))
	for i := range got {
		out = append(out, bufs[i][:sizes[i]])
	}
	return out, orig[:got], dropped
}

func dgrams(seed byte, lens ...int) [][]byte {
	var ds [][]byte
	for i, l := range lens {
		d := make([]byte, l)
		for j := range d {
			d[j] = seed + byte(i) + byte(j*7)
		}
		ds = append(ds, d)
	}
	return ds
}

func TestSplit(t *testing.T) {
	// Two GRO messages (50 segments, and 10 with a short tail) and one
	// plain datagram, read into the last three of 128 buffers.
	m1 := dgrams(1, rep(1200, 50)...)
	m2 := dgrams(2, append(rep(1000, 9), 300)...)
	m3 := dgrams(3, 77)
	out, orig, dropped := splitCase(t, 128, 125, [][][]byte{m1, m2, m3}, []int{1200, 1000, 0})
	want := slices.Concat(m1, m2, m3)
	if dropped != 0 || len(out) != len(want) {
		t.Fatalf("split made %d datagrams, dropped %d; want %d, 0", len(out), dropped, len(want))
	}
	for i := range want {
		if !bytes.Equal(out[i], want[i]) {
			t.Fatalf("datagram %d: %d bytes, differ from the %d sent", i, len(out[i]), len(want[i]))
		}
	}
	if orig[0] != 125 || orig[49] != 125 || orig[50] != 126 || orig[60] != 127 {
		t.Fatalf("origins %v", orig)
	}

	// Without room (read at 0), what does not fit is dropped and counted.
	out, _, dropped = splitCase(t, 4, 0, [][][]byte{dgrams(1, 100, 100, 100)}, []int{100})
	if len(out) != 1 || dropped != 2 {
		t.Fatalf("no room: made %d, dropped %d; want 1, 2", len(out), dropped)
	}
	// A segment size of the message's own size or more is one datagram.
	out, _, dropped = splitCase(t, 2, 1, [][][]byte{dgrams(1, 500)}, []int{500})
	if len(out) != 1 || len(out[0]) != 500 || dropped != 0 {
		t.Fatalf("whole message: made %d, dropped %d", len(out), dropped)
	}
}

// FuzzSplit: any sizes and segment sizes, read anywhere, give datagrams in
// order that are exactly the messages' bytes cut at their segment sizes,
// less the ones dropped for want of room (counted); never a panic.
func FuzzSplit(f *testing.F) {
	f.Add([]byte{2, 10, 3, 0, 5, 2}, uint8(8), uint8(5))
	f.Add([]byte{255, 1, 0, 0}, uint8(3), uint8(1))
	f.Fuzz(func(t *testing.T, spec []byte, n, at uint8) {
		bufs := make([][]byte, int(n)%40+1)
		start := int(at) % len(bufs)
		var want [][]byte
		sizes := make([]int, len(bufs))
		segs := make([]int, len(bufs))
		read := 0
		for k := 0; k+1 < len(spec) && start+read < len(bufs); k += 2 {
			i := start + read
			size, seg := int(spec[k])*3, int(spec[k+1])
			d := dgrams(byte(k), size)[0]
			bufs[i] = slices.Clone(d)
			sizes[i], segs[i] = size, seg
			s := seg
			if s <= 0 || s >= size {
				s = max(size, 1)
			}
			for off := 0; off < size || off == 0; off += s {
				want = append(want, d[off:min(off+s, size)])
				if size == 0 {
					break
				}
			}
			read++
		}
		for i := range bufs {
			if bufs[i] == nil || sizes[i] == 0 && segs[i] == 0 && i < start {
				bufs[i] = make([]byte, 255*3)
			}
			bufs[i] = bufs[i][:cap(bufs[i])]
			if len(bufs[i]) < 255*3 {
				bufs[i] = append(bufs[i], make([]byte, 255*3-len(bufs[i]))...)
			}
		}
		orig := make([]int, len(bufs))
		got, dropped := split(bufs, sizes, segs, orig, start, read)
		if got+dropped != len(want) {
			t.Fatalf("made %d + dropped %d, want %d datagrams", got, dropped, len(want))
		}
		if got > len(bufs) {
			t.Fatalf("made %d datagrams in %d buffers", got, len(bufs))
		}
		j := 0 // datagrams come in order, some dropped: a subsequence of want
		for i := range got {
			for j < len(want) && !bytes.Equal(bufs[i][:sizes[i]], want[j]) {
				j++
			}
			if j == len(want) {
				t.Fatalf("datagram %d (%d bytes) is not the next one cut", i, sizes[i])
			}
			j++
		}
	})
}
