package gwload

import "testing"

// TestAckCountCrossesOnce: done closes when the count reaches total, also
// when one add jumps past it, and later adds neither close it again
// (which would panic) nor reopen it.
func TestAckCountCrossesOnce(t *testing.T) {
	for name, adds := range map[string][]int64{
		"exact":     {2, 3},
		"jump past": {4, 3},
		"one add":   {9},
	} {
		a := newAckCount(5)
		for i, k := range adds {
			select {
			case <-a.done:
				t.Fatalf("%s: done before add %d", name, i)
			default:
			}
			a.add(k)
		}
		select {
		case <-a.done:
		default:
			t.Fatalf("%s: not done at %d of 5", name, a.n.Load())
		}
		a.add(0)
		a.add(3) // after done: no second close
		if !a.reached() {
			t.Fatalf("%s: not reached", name)
		}
	}
	a := newAckCount(5)
	a.add(4)
	a.add(-1)
	a.add(0)
	if a.reached() {
		t.Fatal("reached at 4 of 5")
	}
}
