/// The set of sequence numbers received, as sorted disjoint ranges (ascending, never adjacent),
/// with a floor below which everything is forgotten. Memory is bounded by `maxRanges`.
struct MessagingSequenceSet: Sendable {
    enum InsertResult: Equatable {
        case inserted
        case duplicate
        case tooOld
    }

    private(set) var ranges: [ClosedRange<UInt64>] = []
    /// Sequence numbers below this are forgotten.
    private(set) var floor: UInt64 = 0
    /// How often the oldest range was forgotten for lack of room.
    private(set) var evictions = 0
    let maxRanges: Int

    init(maxRanges: Int) {
        self.maxRanges = max(maxRanges, 1)
    }

    /// Index of the first range whose upper bound is ≥ `seq` (== count when none).
    private func firstIndex(notBelow seq: UInt64) -> Int {
        var lo = 0
        var hi = ranges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ranges[mid].upperBound < seq { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// The range holding `seq`, if any.
    func rangeIndex(containing seq: UInt64) -> Int? {
        let i = firstIndex(notBelow: seq)
        return i < ranges.count && ranges[i].lowerBound <= seq ? i : nil
    }

    func contains(_ seq: UInt64) -> Bool { seq >= floor && rangeIndex(containing: seq) != nil }

    /// The classification `insert` would return, without inserting.
    func classify(_ seq: UInt64) -> InsertResult {
        if seq < floor { return .tooOld }
        return rangeIndex(containing: seq) == nil ? .inserted : .duplicate
    }

    /// Records `seq`. Sequence numbers are < 2^63 (the varint decoder guarantees it), so `+ 1` cannot overflow.
    @discardableResult
    mutating func insert(_ seq: UInt64) -> InsertResult {
        if seq < floor { return .tooOld }
        let i = firstIndex(notBelow: seq)
        if i < ranges.count && ranges[i].lowerBound <= seq { return .duplicate }
        let joinsLeft = i > 0 && ranges[i - 1].upperBound &+ 1 == seq
        let joinsRight = i < ranges.count && ranges[i].lowerBound == seq &+ 1
        switch (joinsLeft, joinsRight) {
        case (true, true):
            ranges[i - 1] = ranges[i - 1].lowerBound...ranges[i].upperBound
            ranges.remove(at: i)
        case (true, false):
            ranges[i - 1] = ranges[i - 1].lowerBound...seq
        case (false, true):
            ranges[i] = seq...ranges[i].upperBound
        case (false, false):
            ranges.insert(seq...seq, at: i)
            if ranges.count > maxRanges {
                let dropped = ranges.removeFirst()
                floor = dropped.upperBound &+ 1
                evictions += 1
            }
        }
        return .inserted
    }
}

/// A sliding bitmap of the last `size` sequence numbers below the highest one seen (as an IPsec
/// replay window): dedup for unreliable messages, whose lost numbers never fill in. Fixed memory.
struct MessagingReplayWindow: Sendable {
    private var words: [UInt64]
    private var highest: UInt64?

    /// Window width in sequence numbers (a multiple of 64).
    var size: Int { words.count * 64 }

    init(size: Int) {
        words = Array(repeating: 0, count: max(1, (size + 63) / 64))
    }

    mutating func insert(_ seq: UInt64) -> MessagingSequenceSet.InsertResult {
        guard let top = highest else {
            highest = seq
            words[0] = 1
            return .inserted
        }
        if seq > top {
            shift(by: seq - top)
            highest = seq
            words[0] |= 1
            return .inserted
        }
        let offset = top - seq
        guard offset < UInt64(size) else { return .tooOld }
        let bit = UInt64(1) << (offset % 64)
        let word = Int(offset / 64)
        if words[word] & bit != 0 { return .duplicate }
        words[word] |= bit
        return .inserted
    }

    /// Moves every remembered number `distance` places further from the top.
    private mutating func shift(by distance: UInt64) {
        guard distance < UInt64(size) else {
            for i in words.indices { words[i] = 0 }
            return
        }
        let wordShift = Int(distance / 64)
        let bitShift = distance % 64
        for i in stride(from: words.count - 1, through: 0, by: -1) {
            let source = i - wordShift
            var value: UInt64 = 0
            if source >= 0 {
                value = words[source] << bitShift
                if bitShift > 0 && source >= 1 { value |= words[source - 1] >> (64 - bitShift) }
            }
            words[i] = value
        }
    }
}
