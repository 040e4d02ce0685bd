package api

import "testing"

func BenchmarkParseChangeRecord(b *testing.B) {
	entry := goldenCases()[1].data // change-device, 2 authorizers
	b.SetBytes(int64(len(entry)))
	for b.Loop() {
		if _, err := ParseEntry(entry); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckChange(b *testing.B) {
	cs := goldenCases()
	r1, _ := ParseChangeRecord(cs[0].data)
	r2, _ := ParseChangeRecord(cs[1].data)
	st := r1.State(cs[0].data)
	_, rec := testKey("recovery")
	for b.Loop() {
		if err := CheckChange(testOrigin, st, r2, rec); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNormalizeHandle(b *testing.B) {
	for _, in := range []string{"+1 (415) 555-0100", "Alice.Smith@Example.com", "jörg@bücher.example"} {
		b.Run(in, func(b *testing.B) {
			for b.Loop() {
				if _, err := NormalizeHandle(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
