package tlogtiles

import (
	"errors"
	"testing"
)

func TestParsePath(t *testing.T) {
	for _, tc := range []struct {
		path string
		want Resource
	}{
		{"tile/0/000", Resource{}},
		{"tile/0/001.p/44", Resource{Index: 1, Width: 44}},
		{"tile/1/000.p/1", Resource{Level: 1, Width: 1}},
		{"tile/3/x001/x234/067", Resource{Level: 3, Index: 1234067}},
		{"tile/entries/000", Resource{Entries: true}},
		{"tile/entries/x001/002.p/255", Resource{Entries: true, Index: 1002, Width: 255}},
		{"tile/63/000", Resource{Level: 63}},
	} {
		got, err := ParsePath(tc.path)
		if err != nil || got != tc.want {
			t.Errorf("ParsePath(%q) = %+v, %v; want %+v", tc.path, got, err, tc.want)
			continue
		}
		if got.Path() != tc.path {
			t.Errorf("%+v.Path() = %q, want %q", got, got.Path(), tc.path)
		}
	}
	for _, p := range []string{
		"", "/", "checkpoint", "/tile/0/000", "tile", "tile/", "tile/0", "tile/0/",
		"tile/../.state/treeState", "tile/0/../../.state/treeState",
		"tile/entries/../../.kt.lock", "tile/0/000/../../../.state/version",
		"tile/entries/%2e%2e/000", "tile//0/000", "tile/0/000/",
		"tile/00/000", "tile/+0/000", "tile/-1/000", "tile/0/0000", "tile/0/00", "tile/0/x000/000",
		"tile/0/001.p/044", "tile/0/000.p/0", "tile/0/000.p/256", "tile/0/000.p/", "tile/0/000.p",
		"tile/64/000", "tile/entries", "tile/entries/", "tile/entries/abc",
		"tile/entries/000.p/0", "tile/entries/000.p/256", "tile/0/x1/000",
		"tile/0/x18446744073709551616/000",
	} {
		if r, err := ParsePath(p); !errors.Is(err, ErrBadPath) {
			t.Errorf("ParsePath(%q) = %+v, %v; want ErrBadPath", p, r, err)
		}
	}
}

// FuzzParsePath: whatever is accepted is canonical (rebuilds to itself)
// and names a tile level below 64 and a width below 256.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"tile/0/000", "tile/entries/x001/002.p/255", "tile/3/x001/x234/067", "tile/0/000.p/0", "tile/../x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		r, err := ParsePath(p)
		if err != nil {
			if !errors.Is(err, ErrBadPath) {
				t.Fatalf("error %v does not match ErrBadPath", err)
			}
			return
		}
		if r.Path() != p {
			t.Fatalf("accepted %q, canonical form %q", p, r.Path())
		}
		if r.Level > 63 || (r.Entries && r.Level != 0) {
			t.Fatalf("accepted %q as %+v", p, r)
		}
		_ = r.Within(^uint64(0))
	})
}

func TestResourceWithin(t *testing.T) {
	for _, tc := range []struct {
		r    Resource
		size uint64
		want bool
	}{
		{Resource{Level: 0, Index: 0}, 255, false},
		{Resource{Level: 0, Index: 0}, 256, true},
		{Resource{Level: 0, Index: 0, Width: 255}, 255, true},
		{Resource{Level: 0, Index: 1, Width: 1}, 256, false},
		{Resource{Level: 0, Index: 1, Width: 1}, 257, true},
		{Resource{Entries: true, Index: 1, Width: 1}, 256, false},
		{Resource{Entries: true, Index: 1, Width: 1}, 257, true},
		{Resource{Level: 1, Index: 0, Width: 1}, 511, true},
		{Resource{Level: 1, Index: 0, Width: 2}, 511, false},
		{Resource{Level: 1, Index: 0}, 65_535, false},
		{Resource{Level: 1, Index: 0}, 65_536, true},
		{Resource{Level: 7, Index: 0, Width: 1}, 1 << 56, true},
		{Resource{Level: 8, Index: 0, Width: 1}, ^uint64(0), false},
		{Resource{Level: 0, Index: ^uint64(0) >> 8}, ^uint64(0), true},
		{Resource{Level: 0, Index: ^uint64(0)}, ^uint64(0), false},
	} {
		if got := tc.r.Within(tc.size); got != tc.want {
			t.Errorf("%+v within %d = %v, want %v", tc.r, tc.size, got, tc.want)
		}
	}
}
