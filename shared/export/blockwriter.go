package export

import (
	"errors"
	"sync"
)

// blockBytes is the size of the blocks a chunk hands to its file.
const blockBytes = 256 << 10

var blockPool = sync.Pool{New: func() any { b := make([]byte, 0, blockBytes); return &b }}

// blockWriter is a FileWriter that gathers what is written into blocks and
// writes each block to the file from a goroutine of its own, so the file's
// write calls (system calls into the page cache, part uploads) overlap the
// reading and checking of the next lines: the engine's two halves run on
// two cores instead of taking turns on one. Nothing about the file changes:
// the same bytes in the same order, Commit only after every block is
// written, the first write error returned by the next Write or by Commit.
type blockWriter struct {
	w    FileWriter
	cur  *[]byte
	full chan *[]byte
	done chan struct{}

	mu  sync.Mutex
	err error
}

var _ FileWriter = (*blockWriter)(nil)

func newBlockWriter(w FileWriter) *blockWriter {
	b := &blockWriter{w: w, cur: blockPool.Get().(*[]byte), full: make(chan *[]byte, 1), done: make(chan struct{})}
	go b.loop()
	return b
}

func (b *blockWriter) loop() {
	defer close(b.done)
	for blk := range b.full {
		if b.failed() == nil {
			if _, err := b.w.Write(*blk); err != nil {
				b.mu.Lock()
				b.err = err
				b.mu.Unlock()
			}
		}
		*blk = (*blk)[:0]
		blockPool.Put(blk)
	}
}

func (b *blockWriter) failed() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// Write copies p into the current block, handing the block over first
// when p does not fit (a line larger than a block gets a block of its own).
func (b *blockWriter) Write(p []byte) (int, error) {
	if b.cur == nil {
		return 0, errors.New("write after commit or abort")
	}
	if err := b.failed(); err != nil {
		return 0, err
	}
	if len(*b.cur) > 0 && len(*b.cur)+len(p) > cap(*b.cur) {
		b.full <- b.cur
		b.cur = blockPool.Get().(*[]byte)
	}
	*b.cur = append(*b.cur, p...)
	return len(p), nil
}

// finish hands over the last block and waits until every block is written.
func (b *blockWriter) finish() error {
	if b.cur == nil {
		return b.failed()
	}
	if len(*b.cur) > 0 {
		b.full <- b.cur
	} else {
		blockPool.Put(b.cur)
	}
	b.cur = nil
	close(b.full)
	<-b.done
	return b.failed()
}

// Commit implements FileWriter.
func (b *blockWriter) Commit() error {
	if err := b.finish(); err != nil {
		_ = b.w.Abort()
		return err
	}
	return b.w.Commit()
}

// Abort implements FileWriter.
func (b *blockWriter) Abort() error {
	_ = b.finish()
	return b.w.Abort()
}
