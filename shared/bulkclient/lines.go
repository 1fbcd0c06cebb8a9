package bulkclient

import (
	"bytes"
	"errors"
	"io"
)

// blockSize is the read buffer of one download: blocks this large go to
// the sink in one write each, past its own buffer (DirSink's is 256 KiB).
const blockSize = 1 << 20

// copyLines copies r to w a block at a time and calls each on every line of
// a block (newline included; the last line may lack one) before the block
// is written, so a line each refuses never reaches w. A line longer than
// the buffer grows it. It returns the bytes written and the first error of
// r, each or w; io.EOF from r is the end, not an error. Lines are slices of
// the buffer, valid only during the call.
func copyLines(r io.Reader, w io.Writer, buf []byte, each func(line []byte) error) (int64, error) {
	var written int64
	fill := 0
	for {
		if fill == len(buf) { // one line fills the buffer
			buf = append(buf, make([]byte, len(buf))...)
		}
		var rerr error
		for fill < len(buf) && rerr == nil {
			var n int
			n, rerr = r.Read(buf[fill:])
			fill += n
		}
		eof := errors.Is(rerr, io.EOF)
		if rerr != nil && !eof {
			// A read that failed mid-stream (an interrupt, a dropped
			// connection, a cut gzip stream) leaves a partial line:
			// nothing more is written.
			return written, rerr
		}
		end := bytes.LastIndexByte(buf[:fill], '\n') + 1
		if eof {
			end = fill
		}
		for rest := buf[:end]; len(rest) > 0; {
			line := rest
			if i := bytes.IndexByte(rest, '\n'); i >= 0 {
				line = rest[:i+1]
			}
			rest = rest[len(line):]
			if err := each(line); err != nil {
				return written, err
			}
		}
		if end > 0 {
			if _, err := w.Write(buf[:end]); err != nil {
				return written, err
			}
			written += int64(end)
			fill = copy(buf, buf[end:fill])
		}
		if eof {
			return written, nil
		}
	}
}
