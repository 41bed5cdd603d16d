"""A tiny module for Toren's demo: the task renames its helper."""


def old_name(who: str) -> str:
    return f"Hello, {who}!"


if __name__ == "__main__":
    print(old_name("world"))
