package bulkclient

import "testing"

// A page read again brings fresh links for the files already merged; new
// files are appended, so the names given so far stay.
func TestMergedPagesTakeFreshLinks(t *testing.T) {
	var p pages
	p.merge(&Manifest{TransactionTime: "t", Output: []Entry{{Type: "Patient", URL: "https://f/a?sig=1"}, {Type: "Patient", URL: "https://f/b?sig=1"}}})
	p.merge(&Manifest{TransactionTime: "t", Output: []Entry{{Type: "Patient", URL: "https://f/b?sig=2"}, {Type: "Patient", URL: "https://f/c?sig=2"}}})
	_, m, err := p.manifest()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range m.Output {
		got = append(got, e.URL)
	}
	want := []string{"https://f/a?sig=1", "https://f/b?sig=2", "https://f/c?sig=2"}
	if len(got) != len(want) {
		t.Fatalf("merged = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("merged = %v, want %v", got, want)
			break
		}
	}
}
