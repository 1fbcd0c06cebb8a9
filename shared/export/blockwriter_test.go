package export

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// recordingWriter is a FileWriter that keeps what it was given and fails
// its n-th Write when failAt > 0.
type recordingWriter struct {
	buf                 bytes.Buffer
	writes, failAt      int
	committed, aborted  bool
	committedAfterError bool
	failed              bool
}

func (r *recordingWriter) Write(p []byte) (int, error) {
	r.writes++
	if r.failAt > 0 && r.writes >= r.failAt {
		r.failed = true
		return 0, errors.New("disk full")
	}
	return r.buf.Write(p)
}
func (r *recordingWriter) Commit() error {
	r.committed = true
	r.committedAfterError = r.failed
	return nil
}
func (r *recordingWriter) Abort() error { r.aborted = true; return nil }

func TestBlockWriter(t *testing.T) {
	small := strings.Repeat("x", 1000)
	huge := strings.Repeat("y", 3*blockBytes)
	for _, c := range []struct {
		name    string
		lines   []string
		failAt  int
		wantErr bool
	}{
		{"empty", nil, 0, false},
		{"one line", []string{small}, 0, false},
		{"many blocks", slicesRepeat(small, 2000), 0, false},
		{"a line larger than a block", []string{small, huge, small}, 0, false},
		{"a failing write fails the commit", slicesRepeat(small, 2000), 3, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := &recordingWriter{failAt: c.failAt}
			w := newBlockWriter(rec)
			var want bytes.Buffer
			var werr error
			for _, l := range c.lines {
				want.WriteString(l + "\n")
				if _, err := w.Write([]byte(l)); err != nil {
					werr = err
					break
				}
				if _, err := w.Write(newline); err != nil {
					werr = err
					break
				}
			}
			err := w.Commit()
			if werr != nil {
				err = werr
			}
			if c.wantErr {
				if err == nil || rec.committedAfterError {
					t.Fatalf("commit after a failed write: err %v, inner committed %v", err, rec.committed)
				}
				return
			}
			if err != nil || !rec.committed || rec.aborted {
				t.Fatalf("commit: %v, committed %v, aborted %v", err, rec.committed, rec.aborted)
			}
			if !bytes.Equal(rec.buf.Bytes(), want.Bytes()) {
				t.Errorf("file has %d bytes, want the %d written, in order", rec.buf.Len(), want.Len())
			}
			if _, err := w.Write([]byte("late")); err == nil {
				t.Error("a write after commit was accepted")
			}
		})
	}
}

func TestBlockWriterAbort(t *testing.T) {
	rec := &recordingWriter{}
	w := newBlockWriter(rec)
	w.Write([]byte(strings.Repeat("z", 2*blockBytes)))
	if err := w.Abort(); err != nil || !rec.aborted || rec.committed {
		t.Errorf("abort: %v, aborted %v, committed %v", err, rec.aborted, rec.committed)
	}
}

func slicesRepeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}
