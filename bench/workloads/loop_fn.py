# The same loop with function locals: CPython's fastest form of this code.
def main():
    s = 0
    i = 1
    while i <= 10000000:
        s = s + i
        i = i + 1
    print(s)


main()
