import Glibc
import SystemPackage
import Testing
@testable import XPMEMSystem

extension SystemTests {
    struct OwnedDescriptorTests {
        @Test func droppingClosesTheDescriptor() throws {
            let number = try quietDescriptor()
            let owned = OwnedDescriptor(adopting: number)
            #expect(isOpen(number))
            drop(owned)
            #expect(isClosed(number))
        }

        @Test func closeClosesOnceAndNeverAgain() throws {
            let number = try quietDescriptor()
            OwnedDescriptor(adopting: number).close()
            #expect(isClosed(number))
            // Put a new file at the same number: a second close of the old owner would take it away.
            let reused = try quietDescriptor()
            try #require(reused == number)
            #expect(isOpen(reused))
            #expect(Glibc.close(reused) == 0)
        }

        @Test func relinquishLeavesTheDescriptorOpen() throws {
            let number = try quietDescriptor()
            let handedOn = OwnedDescriptor(adopting: number).relinquish()
            #expect(handedOn == number)
            #expect(isOpen(number))
            // The new owner's close succeeds, so nobody closed it before.
            #expect(Glibc.close(number) == 0)
        }

        @Test func duplicateIsIndependentlyOwned() throws {
            let original = OwnedDescriptor(adopting: try quietDescriptor())
            let copy = try original.duplicate()
            let (originalNumber, copyNumber) = (original.rawValue, copy.rawValue)
            #expect(originalNumber != copyNumber)
            #expect(fcntl(copyNumber, F_GETFD) & FD_CLOEXEC != 0)
            drop(original)
            #expect(isClosed(originalNumber))
            // The copy's number is an ordinary low one that others may take once it is free, so only
            // its staying open is checked.
            #expect(isOpen(copyNumber))
        }

        @Test func statusFlagsAndNonBlocking() throws {
            let pair = try UnixSocket.pair()
            #expect(try pair.first.statusFlags() & O_NONBLOCK == 0)
            try pair.first.setNonBlocking(true)
            #expect(try pair.first.statusFlags() & O_NONBLOCK != 0)
            try pair.first.setNonBlocking(false)
            #expect(try pair.first.statusFlags() & O_NONBLOCK == 0)
        }
    }

    struct OwnedDescriptorListTests {
        @Test func untakenDescriptorsCloseWithTheList() throws {
            let numbers = try (0..<3).map { _ in try quietDescriptor(offset: 10) }
            try #require(Set(numbers).count == 3)
            var taken: OwnedDescriptor?
            do {
                let list = OwnedDescriptorList(adopting: numbers)
                #expect(list.count == 3)
                #expect(list.rawValues == numbers)
                taken = list.takeFirst()
                #expect(list.count == 2)
            }
            #expect(taken?.rawValue == numbers[0])
            #expect(isOpen(numbers[0]))
            #expect(isClosed(numbers[1]))
            #expect(isClosed(numbers[2]))
            taken = nil
            #expect(isClosed(numbers[0]))
        }

        @Test func closeAllEmptiesTheList() throws {
            let numbers = try (0..<2).map { _ in try quietDescriptor(offset: 20) }
            var list: OwnedDescriptorList? = OwnedDescriptorList(adopting: numbers)
            list?.closeAll()
            #expect(list?.isEmpty == true)
            #expect(list?.takeFirst()?.rawValue == nil)
            #expect(numbers.allSatisfy(isClosed))
            // The list's own deinit must not close the numbers a second time; reoccupy one to check.
            let reused = try quietDescriptor(offset: 20)
            try #require(reused == numbers[0])
            list = nil
            #expect(isOpen(reused))
            #expect(Glibc.close(reused) == 0)
        }
    }
}
